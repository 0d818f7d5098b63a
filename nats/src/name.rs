//! Checks on names and ids that arrive from the bus, so code behind the edge can trust them.
//!
//! An invocation or job id becomes a KV key (`attune-results`), a subject token
//! (`attune.results.<id>`) and an object name, so it must be valid as all three: letters, digits,
//! `_` and `-`, 1 to [`MAX_ID_LEN`] characters. An action ref names a registered action; one that
//! carries control characters or is absurdly long cannot, and is refused before it reaches a log
//! line or a header.

/// The longest invocation or job id accepted.
pub const MAX_ID_LEN: usize = 128;
/// The longest action ref accepted from the bus (two names of at most 64 characters and a dot,
/// with room to spare for older packs).
pub const MAX_ACTION_REF_LEN: usize = 256;

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
}

/// The first 64 characters of `value`, for messages.
fn shown(value: &str) -> String {
    value.chars().take(64).collect()
}

/// Checks an invocation or job id: `[A-Za-z0-9_-]`, 1 to [`MAX_ID_LEN`] characters.
pub fn check_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() {
        return Err(NameError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(NameError::TooLong {
            len: id.len(),
            max: MAX_ID_LEN,
        });
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(bad) => Err(NameError::BadChar {
            shown: shown(id),
            bad,
            allowed: "letters, digits, '_' and '-'",
        }),
        None => Ok(()),
    }
}

/// Checks an action ref from the bus: non-empty, at most [`MAX_ACTION_REF_LEN`] bytes, with no
/// control characters or whitespace.
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
    match action.chars().find(|c| c.is_control() || c.is_whitespace()) {
        Some(bad) => Err(NameError::BadChar {
            shown: shown(action),
            bad,
            allowed: "no whitespace or control characters",
        }),
        None => Ok(()),
    }
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
    fn action_refs_from_the_bus_have_no_control_characters() {
        assert!(check_action_ref("core.echo").is_ok());
        for bad in ["", "core\necho", "core echo", "core\0", &"a".repeat(300)] {
            assert!(check_action_ref(bad).is_err(), "{bad:?}");
        }
    }
}
