//! Loader: determinism across worker counts, resuming, shuffling, drop-last, caching,
//! skip-corrupt, and the stratified validation split.

mod common;
use common::*;
use densum_data::*;
use std::sync::Arc;

fn cifar(n_per_batch: u32) -> Arc<dyn Dataset> {
    let d = tmp(&format!("loader-c10-{n_per_batch}"));
    write_files(&d, &cifar_files("c10bin", n_per_batch));
    Arc::from(open(&d, Split::Train).unwrap())
}

fn loader(ds: Arc<dyn Dataset>, workers: usize, cfg: LoaderConfig) -> Loader {
    let aug = Augment::new(AugmentConfig::preset("cifar").unwrap().with_cutout(1, 8)).unwrap();
    Loader::new(ds, aug, Normalize::CIFAR10, LoaderConfig { workers, ..cfg }).unwrap()
}

fn all(l: &Loader, epoch: u64) -> Vec<Batch> {
    l.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn same_batches_for_one_and_two_workers_and_epochs_differ() {
    let ds = cifar(20);
    let cfg = LoaderConfig {
        batch_size: 16,
        seed: 7,
        prefetch: 2,
        ..Default::default()
    };
    let a = all(&loader(ds.clone(), 1, cfg.clone()), 3);
    let b = all(&loader(ds.clone(), 2, cfg.clone()), 3);
    assert_eq!(a.len(), 7); // 100 samples / 16, last batch of 4 kept
    assert_eq!(a, b);
    assert_eq!(a[6].shape, [4, 3, 32, 32]);
    // Every sample exactly once per epoch.
    let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    // Another epoch: another order and other augmentations.
    let c = all(&loader(ds.clone(), 2, cfg.clone()), 4);
    assert_ne!(a[0].indices, c[0].indices);
    // Another seed: different.
    let d = all(&loader(ds, 2, LoaderConfig { seed: 8, ..cfg }), 3);
    assert_ne!(a[0].images, d[0].images);
}

#[test]
fn resume_from_batch_k_equals_tail_and_drop_last() {
    let ds = cifar(10);
    let cfg = LoaderConfig {
        batch_size: 8,
        seed: 1,
        drop_last: true,
        ..Default::default()
    };
    let l = loader(ds, 2, cfg);
    assert_eq!(l.batches_per_epoch(), 6);
    let full = all(&l, 2);
    assert_eq!(full.len(), 6);
    assert!(full.iter().all(|b| b.shape[0] == 8));
    let tail: Vec<Batch> = l.epoch_from(2, 4).map(|b| b.unwrap()).collect();
    assert_eq!(tail, full[4..].to_vec());
    // Dropping an iterator early does not hang.
    let mut it = l.epoch(0);
    it.next().unwrap().unwrap();
    drop(it);
}

#[test]
fn batch_values_are_normalised_pixels_without_augmentation() {
    let ds = cifar(2);
    let l = Loader::new(
        ds.clone(),
        Augment::preset("none").unwrap(),
        Normalize::CIFAR10,
        LoaderConfig {
            batch_size: 4,
            shuffle: false,
            ..Default::default()
        },
    )
    .unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.indices, vec![0, 1, 2, 3]);
    for (k, &i) in b.indices.iter().enumerate() {
        let s = ds.get(i).unwrap();
        assert_eq!(b.labels[k], s.label as i64);
        // Pixel (y=5, x=9), channel 2 in NCHW.
        let v = s.image.pixels[(5 * 32 + 9) * 3 + 2];
        assert_eq!(
            b.images[k * 3072 + 2 * 1024 + 5 * 32 + 9],
            Normalize::CIFAR10.apply(2, v)
        );
    }
}

#[test]
fn cache_and_skip_corrupt_on_image_folders() {
    let d = tmp("loader-folder");
    image_folder(&d, &["a", "b"], 4);
    std::fs::write(d.join("b/002.png"), b"broken").unwrap();
    let ds: Arc<dyn Dataset> = Arc::from(open(&d, Split::Train).unwrap());
    let cfg = LoaderConfig {
        batch_size: 3,
        shuffle: false,
        ..Default::default()
    };
    // Without skip_corrupt the epoch ends with an error naming the file.
    let strict = Loader::new(
        ds.clone(),
        Augment::preset("none").unwrap(),
        Normalize::IMAGENET,
        cfg.clone(),
    )
    .unwrap();
    let r: Vec<_> = strict.epoch(0).collect();
    let e = r.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(e.contains("002.png"), "{e}");
    let l = Loader::new(
        ds,
        Augment::preset("none").unwrap(),
        Normalize::IMAGENET,
        LoaderConfig {
            skip_corrupt: true,
            cache: true,
            ..cfg
        },
    )
    .unwrap();
    let b = all(&l, 0);
    assert_eq!(b.iter().map(|b| b.shape[0]).sum::<usize>(), 7);
    assert_eq!(b[2].skipped.len(), 1);
    assert_eq!(b[2].shape, [1, 3, 10, 12]);
    assert_eq!(l.skipped(), 1);
    assert!(l.dataset().in_memory());
    // The cached epoch gives identical batches.
    assert_eq!(all(&l, 0), b);
}

#[test]
fn stratified_split_is_exact_deterministic_and_disjoint() {
    let ds = cifar(20); // 100 samples, 10 per class
    let (t, v) = split_train_val(&*ds, ValSplit::Count(20), 5).unwrap();
    assert_eq!((t.len(), v.len()), (80, 20));
    let mut per = [0; 10];
    for &i in &v {
        per[ds.label(i)] += 1;
    }
    assert_eq!(per, [2; 10]);
    let mut u: Vec<usize> = t.iter().chain(&v).copied().collect();
    u.sort();
    assert_eq!(u, (0..100).collect::<Vec<_>>());
    assert_eq!(split_train_val(&*ds, ValSplit::Count(20), 5).unwrap().1, v);
    assert_ne!(split_train_val(&*ds, ValSplit::Count(20), 6).unwrap().1, v);
    // Fractions and uneven quotas still sum exactly.
    let (_, v2) = split_train_val(&*ds, "0.13".parse().unwrap(), 0).unwrap();
    assert_eq!(v2.len(), 13);
    let (tr, va) = carve_val(ds, ValSplit::Count(15), 0).unwrap();
    assert_eq!((tr.len(), va.len()), (85, 15));
    assert!("1.5".parse::<ValSplit>().is_err());
}

#[test]
fn imagenet_presets_give_fixed_size_batches() {
    let d = tmp("loader-imagenet");
    let c = d.join("train/x");
    std::fs::create_dir_all(&c).unwrap();
    rgb(300, 260, 1).save(c.join("a.png")).unwrap();
    rgb(280, 320, 2).save(c.join("b.png")).unwrap();
    let ds: Arc<dyn Dataset> = Arc::from(open(&d, Split::Train).unwrap());
    for p in ["imagenet-train", "imagenet-eval"] {
        let l = Loader::new(
            ds.clone(),
            Augment::preset(p).unwrap(),
            Normalize::IMAGENET,
            LoaderConfig::default(),
        )
        .unwrap();
        let b = l.epoch(0).next().unwrap().unwrap();
        assert_eq!(b.shape, [2, 3, 224, 224]);
    }
    // Resize alone on images of different aspect cannot batch: clear error.
    let cfg = AugmentConfig {
        resize: Some(64),
        ..Default::default()
    };
    let l = Loader::new(
        ds,
        Augment::new(cfg).unwrap(),
        Normalize::IMAGENET,
        LoaderConfig::default(),
    )
    .unwrap();
    let e = l.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(e.contains("fixed size"), "{e}");
}
