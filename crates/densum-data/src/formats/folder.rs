//! Image folders: `ROOT/<class>/<image>` (torchvision's `ImageFolder`), and a flat folder of
//! images plus a labels file (ImageNet validation as distributed).

use crate::dataset::{Dataset, Format, Image, Sample, check_index};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// True for file names the decoder handles (JPEG, PNG), by extension, case-insensitive.
pub fn is_image_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".jpg") || n.ends_with(".jpeg") || n.ends_with(".png")
}

/// Decodes JPEG or PNG bytes (recognised by content, not extension) to RGB.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<Image> {
    let err = |m: String| Error::Decode {
        path: path.to_path_buf(),
        msg: m,
    };
    let fmt = image::guess_format(bytes).map_err(|e| err(e.to_string()))?;
    if !matches!(fmt, image::ImageFormat::Jpeg | image::ImageFormat::Png) {
        return Err(err(format!("{fmt:?} is not JPEG or PNG")));
    }
    let img = image::load_from_memory_with_format(bytes, fmt).map_err(|e| err(e.to_string()))?;
    let rgb = img.into_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(err("image has no pixels".into()));
    }
    Ok(Image {
        width: w,
        height: h,
        pixels: rgb.into_raw(),
    })
}

/// Reads and decodes an image file.
pub fn decode_file(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, path)
}

/// Images with labels given by folder or by a labels file.
pub struct ImageFolder {
    format: Format,
    source: String,
    classes: Vec<String>,
    items: Vec<(PathBuf, u32)>,
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        // Hidden entries (.DS_Store, .ipynb_checkpoints) are never classes or images.
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        let is_dir = std::fs::metadata(&p)
            .map_err(|e| Error::io(&p, e))?
            .is_dir();
        v.push((name, p, is_dir));
    }
    // Byte order of UTF-8 names = code point order = Python's sorted(), as torchvision.
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Image files under `dir`, recursively, sorted per level (as torchvision's os.walk + sort).
fn collect_images(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) -> Result<()> {
    if depth > 32 {
        return Err(Error::format(
            dir.display(),
            "folders nested too deep (symlink loop?)",
        ));
    }
    for (name, p, is_dir) in sorted_entries(dir)? {
        if is_dir {
            collect_images(&p, depth + 1, out)?;
        } else if is_image_name(&name) {
            out.push(p);
        }
    }
    Ok(())
}

impl ImageFolder {
    /// Class folders under `root`; errors on an empty class folder, naming it.
    pub fn open(root: &Path) -> Result<ImageFolder> {
        let classes: Vec<(String, PathBuf)> = sorted_entries(root)?
            .into_iter()
            .filter(|e| e.2)
            .map(|(n, p, _)| (n, p))
            .collect();
        if classes.is_empty() {
            return Err(Error::format(root.display(), "no class folders"));
        }
        let mut items = Vec::new();
        for (i, (_, p)) in classes.iter().enumerate() {
            let mut files = Vec::new();
            collect_images(p, 0, &mut files)?;
            if files.is_empty() {
                return Err(Error::format(
                    p.display(),
                    "empty class folder: no .jpg, .jpeg or .png files",
                ));
            }
            items.extend(files.into_iter().map(|f| (f, i as u32)));
        }
        Ok(ImageFolder {
            format: Format::ImageFolder,
            source: root.display().to_string(),
            classes: classes.into_iter().map(|c| c.0).collect(),
            items,
        })
    }

    /// A flat folder of images labelled by `labels_file`.
    ///
    /// The labels file has one image per line: `file class` or `file,class` (the file name
    /// with or without extension; the class a name such as a WordNet id, or an index), or is
    /// a Kaggle `LOC_val_solution.csv` (`ImageId,PredictionString`, class = first word).
    /// Classes are `classes` when given (the training folder's, so indices agree), otherwise
    /// the sorted distinct names of the file.
    pub fn open_flat(
        dir: &Path,
        labels_file: &Path,
        classes: Option<Vec<String>>,
    ) -> Result<ImageFolder> {
        let text = std::fs::read_to_string(labels_file).map_err(|e| Error::io(labels_file, e))?;
        let lf = labels_file.display();
        let mut by_name: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for (ln, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || (ln == 0 && line.starts_with("ImageId,"))
            {
                continue;
            }
            let mut parts = line.split([',', ' ', '\t']).filter(|s| !s.is_empty());
            let (Some(file), Some(class)) = (parts.next(), parts.next()) else {
                return Err(Error::format(
                    lf,
                    format!("line {}: expected 'file class', got {line:?}", ln + 1),
                ));
            };
            // Accept `name.JPEG` and bare `name` alike (Kaggle's CSV omits the extension).
            let stem = match file.rsplit_once('.') {
                Some((s, _)) if is_image_name(file) => s,
                _ => file,
            };
            if by_name
                .insert(stem.to_string(), (class.to_string(), ln + 1))
                .is_some()
            {
                return Err(Error::format(
                    lf,
                    format!("line {}: {file} is listed twice", ln + 1),
                ));
            }
        }
        let classes = match classes {
            Some(c) => c,
            None => {
                let mut c: Vec<String> = by_name.values().map(|v| v.0.clone()).collect();
                c.sort();
                c.dedup();
                // Integer labels sort numerically, so index i is label i.
                if c.iter().all(|s| s.parse::<u64>().is_ok()) {
                    c.sort_by_key(|s| s.parse::<u64>().unwrap());
                }
                c
            }
        };
        let index: BTreeMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let mut items = Vec::new();
        for (name, p, is_dir) in sorted_entries(dir)? {
            if is_dir || !is_image_name(&name) {
                continue;
            }
            let stem = name.rsplit_once('.').map_or(name.as_str(), |x| x.0);
            let (class, line) = by_name.remove(stem).ok_or_else(|| {
                Error::format(
                    p.display(),
                    format!("image has no entry in labels file {lf}"),
                )
            })?;
            let label = match index.get(class.as_str()) {
                Some(&i) => i,
                None => match class.parse::<usize>() {
                    Ok(i) if i < classes.len() => i,
                    _ => {
                        return Err(Error::format(
                            lf,
                            format!(
                                "line {line}: unknown class {class:?} ({} classes)",
                                classes.len()
                            ),
                        ));
                    }
                },
            };
            items.push((p, label as u32));
        }
        if let Some((name, (_, line))) = by_name.iter().next() {
            return Err(Error::format(
                lf,
                format!("line {line}: image {name} not found in {}", dir.display()),
            ));
        }
        if items.is_empty() {
            return Err(Error::format(dir.display(), "no .jpg, .jpeg or .png files"));
        }
        Ok(ImageFolder {
            format: Format::FlatImageFolder,
            source: dir.display().to_string(),
            classes,
            items,
        })
    }

    /// Path of sample `index`.
    pub fn path(&self, index: usize) -> &Path {
        &self.items[index].0
    }
}

impl Dataset for ImageFolder {
    fn format(&self) -> Format {
        self.format
    }
    fn source(&self) -> String {
        self.source.clone()
    }
    fn len(&self) -> usize {
        self.items.len()
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn image_size(&self) -> Option<(u32, u32)> {
        None
    }
    fn label(&self, index: usize) -> usize {
        self.items[index].1 as usize
    }
    fn get(&self, index: usize) -> Result<Sample> {
        check_index(self, index)?;
        let (p, l) = &self.items[index];
        Ok(Sample {
            image: decode_file(p)?,
            label: *l as usize,
        })
    }
    fn item_name(&self, index: usize) -> String {
        self.items[index].0.display().to_string()
    }
    fn in_memory(&self) -> bool {
        false
    }
}
