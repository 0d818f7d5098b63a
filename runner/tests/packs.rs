//! The runner's pack cache against a real object store: hostile archives are refused with the
//! archive reader's error, leave nothing in the cache or outside it, and a good pack still
//! fetches afterwards.

use async_nats::jetstream;
use attune_nats::archive;
use attune_nats::jetstream::StoreOptions;
use attune_nats::{Namespace, PackMeta};
use attune_runner::packs::{PackCache, PackError};
use attune_testkit::{hostile_archives, NatsServer};

/// The metadata of pack `evil` published under `digest`.
fn meta(digest: &str) -> PackMeta {
    PackMeta {
        reference: "evil".into(),
        label: None,
        description: None,
        version: "1.0.0".into(),
        author: None,
        digest: digest.into(),
        runtimes: vec![],
        actions: vec![],
        sensors: vec![],
        rules: vec![],
        trigger_types: vec![],
        sensor_specs: vec![],
        preload: Default::default(),
        registered_at: None,
    }
}

#[tokio::test]
async fn the_pack_cache_refuses_hostile_archives_and_leaves_nothing_behind() {
    let server = NatsServer::start();
    let js = jetstream::new(server.connect().await);
    let store = attune_registry::provision(&js, &Namespace::default(), &StoreOptions::default())
        .await
        .unwrap()
        .pack_files;
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = PackCache::new(cache_dir.path(), store.clone());
    let pack_yaml: &[u8] = b"ref: evil\n";

    let mut huge = tar::Header::new_gnu();
    huge.set_path("huge").unwrap();
    huge.set_size(archive::MAX_FILE_BYTES + 1);
    huge.set_cksum();

    let mut cases = hostile_archives("/tmp/attune-runner-evil");
    cases.extend([(
        "file over the cap",
        huge.as_bytes().to_vec(),
        "a pack file may have at most",
    )]);
    for (case, bytes, expected) in cases {
        let digest = archive::digest(&bytes);
        store
            .put(digest.as_str(), &mut bytes.as_slice())
            .await
            .unwrap();
        let err = cache.fetch(&meta(&digest)).await.expect_err(case);
        assert!(matches!(err, PackError::Unpack { .. }), "{case}: {err}");
        assert!(err.to_string().contains(expected), "{case}: {err}");
        let left: Vec<_> = std::fs::read_dir(cache_dir.path().join("packs/evil"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{case}: {left:?}");
    }
    assert!(!cache_dir.path().join("evil").exists());
    assert!(!std::path::Path::new("/tmp/attune-runner-evil").exists());

    // A good archive still fetches.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("pack.yaml"), pack_yaml).unwrap();
    let (bytes, digest) = archive::pack_dir(src.path()).unwrap();
    store
        .put(digest.as_str(), &mut bytes.as_slice())
        .await
        .unwrap();
    let dir = cache.fetch(&meta(&digest)).await.unwrap();
    assert_eq!(
        std::fs::read(dir.path.join("pack.yaml")).unwrap(),
        pack_yaml
    );
}
