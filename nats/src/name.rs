//! Checks on names and ids that arrive from the bus, so code behind the edge can trust them.
//!
//! An invocation or job id becomes a KV key (`attune-results`), a subject token
//! (`attune.results.<id>`) and an object name, so it must be valid as all three: letters, digits,
//! `_` and `-`, 1 to [`MAX_ID_LEN`] characters. An action ref names a registered action; one that
//! carries control characters or is absurdly long cannot, and is refused before it reaches a log
//! line or a header.
//!
//! Names a pack defines (pack, action, sensor, trigger and runtime names) become subject tokens,
//! KV keys, directory names and ref parts, so they use the same safe alphabet as ids, at most
//! [`MAX_NAME_LEN`] characters ([`check_name`]). Version names may also hold `.` and `+`
//! ([`check_version_name`]). Parameter names become environment variable names and file keys,
//! so they are identifiers and never one a shell, a dynamic linker, an interpreter or the runner
//! reads ([`check_parameter_name`]). The pack loader and the bus side call the same functions.

/// The longest invocation or job id accepted.
pub const MAX_ID_LEN: usize = 128;
/// The longest action ref accepted from the bus (two names of at most 64 characters and a dot,
/// with room to spare for older packs).
pub const MAX_ACTION_REF_LEN: usize = 256;
/// The longest pack, action, sensor, trigger, runtime, version or parameter name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// The alphabet of names and ids, in words.
const NAME_ALPHABET: &str = "letters, digits, '_' and '-'";
/// The alphabet of version names, in words.
const VERSION_ALPHABET: &str = "ASCII letters, digits, '.', '-' and '+'";
/// The alphabet of parameter names, in words.
const PARAMETER_ALPHABET: &str = "letters, digits and '_', not starting with a digit";

/// Parameter names refused whatever their case, because a shell, the dynamic linker or an
/// interpreter reads a variable of that name.
const RESERVED_PARAMETERS: &[&str] = &[
    "PATH",
    "HOME",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELL",
    "PS4",
    "PROMPT_COMMAND",
    "NODE_OPTIONS",
];
/// Prefixes of parameter names refused whatever their case: the dynamic linker's, Python's and
/// the runner's own variables.
const RESERVED_PARAMETER_PREFIXES: &[&str] = &["LD_", "DYLD_", "PYTHON", "ATTUNE_"];

/// Why a name or id from the bus was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The value is empty.
    #[error("it is empty")]
    Empty,
    /// The value is longer than allowed.
    #[error("it is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value has a character outside its alphabet.
    #[error("{shown:?} has the character {bad:?}, which is not allowed ({allowed})")]
    BadChar {
        /// The value, shortened for the message.
        shown: String,
        /// The first character that is not allowed.
        bad: char,
        /// The alphabet, in words.
        allowed: &'static str,
    },
    /// The value starts with a character its alphabet allows only further in.
    #[error("{shown:?} starts with {bad:?}, which is not allowed ({allowed})")]
    BadStart {
        /// The value, shortened for the message.
        shown: String,
        /// Its first character.
        bad: char,
        /// The alphabet, in words.
        allowed: &'static str,
    },
    /// A dotted value has an empty part (`1..2`, `1.`), which would be an empty subject token.
    #[error("{shown:?} has an empty part between dots")]
    EmptyPart {
        /// The value, shortened for the message.
        shown: String,
    },
    /// An action ref without the dot between pack and name.
    #[error("{shown:?} is not a ref: write <pack>.<action>")]
    NotARef {
        /// The value, shortened for the message.
        shown: String,
    },
    /// The value is a name something else already reads (`PATH`, `LD_PRELOAD`, `ATTUNE_…`).
    #[error("{shown:?} is reserved ({rule})")]
    Reserved {
        /// The value, shortened for the message.
        shown: String,
        /// Which reserved name or prefix it matches, in words.
        rule: String,
    },
}

/// The first 64 characters of `value`, for messages.
fn shown(value: &str) -> String {
    value.chars().take(64).collect()
}

/// Checks that `value` is 1 to `max` bytes long and made only of characters `ok` accepts.
fn check_alphabet(
    value: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
    allowed: &'static str,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty);
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            len: value.len(),
            max,
        });
    }
    match value.chars().find(|c| !ok(*c)) {
        Some(bad) => Err(NameError::BadChar {
            shown: shown(value),
            bad,
            allowed,
        }),
        None => Ok(()),
    }
}

/// Whether `c` belongs to the alphabet of names and ids: `[A-Za-z0-9_-]`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Checks an invocation or job id: `[A-Za-z0-9_-]`, 1 to [`MAX_ID_LEN`] characters.
pub fn check_id(id: &str) -> Result<(), NameError> {
    check_alphabet(id, MAX_ID_LEN, is_name_char, NAME_ALPHABET)
}

/// Checks a pack, action, sensor, trigger or runtime name: `[A-Za-z0-9_-]`, 1 to
/// [`MAX_NAME_LEN`] characters. A ref is two such names joined by a dot: `<pack>.<name>`.
pub fn check_name(value: &str) -> Result<(), NameError> {
    check_alphabet(value, MAX_NAME_LEN, is_name_char, NAME_ALPHABET)
}

/// Checks a version name: ASCII letters, digits, `.`, `-` and `+`, 1 to [`MAX_NAME_LEN`]
/// characters, not starting with `.` or `-`, with no empty part between dots (each part is a
/// subject token of `attune.invoke.<runtime>.<version>`).
pub fn check_version_name(value: &str) -> Result<(), NameError> {
    check_alphabet(
        value,
        MAX_NAME_LEN,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'),
        VERSION_ALPHABET,
    )?;
    if let Some(bad @ ('.' | '-')) = value.chars().next() {
        return Err(NameError::BadStart {
            shown: shown(value),
            bad,
            allowed: "a version starts with a letter, a digit or '+'",
        });
    }
    if value.split('.').any(str::is_empty) {
        return Err(NameError::EmptyPart {
            shown: shown(value),
        });
    }
    Ok(())
}

/// Checks a parameter name: `[A-Za-z_][A-Za-z0-9_]*`, 1 to [`MAX_NAME_LEN`] characters, and none
/// of the names a shell, the dynamic linker, an interpreter or the runner reads (`PATH`, `HOME`,
/// `IFS`, `ENV`, `BASH_ENV`, `SHELL`, `PS4`, `PROMPT_COMMAND`, `NODE_OPTIONS`, and names starting
/// with `LD_`, `DYLD_`, `PYTHON` or `ATTUNE_`), compared without regard to case.
pub fn check_parameter_name(value: &str) -> Result<(), NameError> {
    check_alphabet(
        value,
        MAX_NAME_LEN,
        |c| c.is_ascii_alphanumeric() || c == '_',
        PARAMETER_ALPHABET,
    )?;
    if let Some(bad) = value.chars().next().filter(char::is_ascii_digit) {
        return Err(NameError::BadStart {
            shown: shown(value),
            bad,
            allowed: PARAMETER_ALPHABET,
        });
    }
    let upper = value.to_ascii_uppercase();
    let rule = if let Some(name) = RESERVED_PARAMETERS.iter().find(|n| **n == upper) {
        format!("the environment variable {name} is read by the shell or an interpreter")
    } else if let Some(prefix) = RESERVED_PARAMETER_PREFIXES
        .iter()
        .find(|p| upper.starts_with(*p))
    {
        format!("names starting with {prefix} are read by the linker, an interpreter or the runner")
    } else {
        return Ok(());
    };
    Err(NameError::Reserved {
        shown: shown(value),
        rule,
    })
}

/// Checks an action ref from the bus: `<pack>.<name>`, each a valid [`check_name`], so only a
/// ref that could have been registered gets past the edge.
pub fn check_action_ref(action: &str) -> Result<(), NameError> {
    if action.is_empty() {
        return Err(NameError::Empty);
    }
    if action.len() > MAX_ACTION_REF_LEN {
        return Err(NameError::TooLong {
            len: action.len(),
            max: MAX_ACTION_REF_LEN,
        });
    }
    let Some((pack, name)) = action.split_once('.') else {
        return Err(NameError::NotARef {
            shown: shown(action),
        });
    };
    check_name(pack)?;
    check_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kv_key_and_subject_token_safe() {
        for good in ["j1", "job-1", "a_b", &"x".repeat(MAX_ID_LEN)] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "x:y",
            "a.b",
            "a\nb",
            "a*",
            "a>",
            "é",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        let e = check_id("x:y").unwrap_err().to_string();
        assert!(e.contains("':'"), "{e}");
    }

    #[test]
    fn names_use_the_safe_alphabet() {
        for good in [
            "core",
            "py_echo",
            "node-18",
            "A9",
            &"n".repeat(MAX_NAME_LEN),
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "..",
            ".",
            "a.b",
            "a b",
            "a*",
            "a>",
            "é",
            "/tmp/x",
            "a\nb",
            "a\0",
            &"n".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_name("/tmp/x").unwrap_err().to_string(),
            "\"/tmp/x\" has the character '/', which is not allowed (letters, digits, '_' and '-')"
        );
        assert_eq!(check_name("").unwrap_err(), NameError::Empty);
    }

    #[test]
    fn version_names_allow_dots_and_plus_inside() {
        for good in ["3.12", "1.0.0-rc.1+build.5", "default", "v2", "18"] {
            assert!(check_version_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".1",
            "-1",
            "1..2",
            "1.",
            "1/2",
            "../x",
            "1 2",
            "1*",
            "1>",
            "3.12é",
            "1_2",
            &"1".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_version_name(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            check_version_name("-1").unwrap_err(),
            NameError::BadStart { bad: '-', .. }
        ));
        assert!(matches!(
            check_version_name("1..2").unwrap_err(),
            NameError::EmptyPart { .. }
        ));
    }

    #[test]
    fn parameter_names_are_identifiers_and_not_reserved() {
        for good in [
            "message",
            "_x",
            "count2",
            "api_token",
            "Path2",
            "LDX",
            "py_version",
        ] {
            assert!(check_parameter_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "x; touch pwned; y",
            "a-b",
            "a.b",
            "2x",
            "é",
            "$(id)",
            &"p".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(check_parameter_name(bad).is_err(), "{bad:?}");
        }
        for reserved in [
            "PATH",
            "path",
            "HOME",
            "IFS",
            "ENV",
            "BASH_ENV",
            "SHELL",
            "PS4",
            "PROMPT_COMMAND",
            "LD_PRELOAD",
            "ld_library_path",
            "DYLD_INSERT_LIBRARIES",
            "PYTHONPATH",
            "PythonStartup",
            "NODE_OPTIONS",
            "ATTUNE_TOKEN",
        ] {
            assert!(
                matches!(
                    check_parameter_name(reserved),
                    Err(NameError::Reserved { .. })
                ),
                "{reserved}"
            );
        }
        let e = check_parameter_name("ld_preload").unwrap_err().to_string();
        assert!(e.contains("reserved") && e.contains("LD_"), "{e}");
    }

    #[test]
    fn action_refs_from_the_bus_have_no_control_characters() {
        assert!(check_action_ref("core.echo").is_ok());
        for bad in [
            "",
            "core\necho",
            "core echo",
            "core\0",
            &"a".repeat(300),
            "echo",
            "core.echo.more",
            "core.",
            "../x.y",
        ] {
            assert!(check_action_ref(bad).is_err(), "{bad:?}");
        }
    }
}
