//! Tensor names (spec section 6): from the path of a parameter in densum's module tree to
//! the name it has in a weight file (torchvision's where torchvision has the model).

/// One step of a module path: the field (or index) entered and the container it belongs to.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Field name or index.
    pub name: String,
    /// Burn's container description (`Struct:BatchNorm`, `Vec`, `Enum:Block`, ...).
    pub container: String,
}

/// Tracks the path while Burn walks a module.
#[derive(Default, Debug)]
pub struct PathTracker {
    stack: Vec<Segment>,
}

impl PathTracker {
    /// Entering a field.
    pub fn enter(&mut self, name: &str, container: &str) {
        self.stack.push(Segment {
            name: name.to_string(),
            container: container.to_string(),
        });
    }

    /// Leaving it.
    pub fn exit(&mut self) {
        self.stack.pop();
    }

    /// The file name of the tensor at the current path, and whether it is stored transposed
    /// (Burn keeps linear weights as `[in, out]`, PyTorch as `[out, in]`).
    pub fn current(&self) -> (String, bool) {
        spec_name(&self.stack)
    }
}

fn index(s: &Segment) -> usize {
    s.name.parse().unwrap_or(0)
}

/// Maps a Burn module path to the spec's tensor name.
pub fn spec_name(path: &[Segment]) -> (String, bool) {
    // Enum variants are an implementation detail (Block::Bottleneck, FreeNorm::Batch, ...).
    let segs: Vec<&Segment> = path
        .iter()
        .filter(|s| !s.container.starts_with("Enum:"))
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let s = segs[i];
        let next = segs.get(i + 1);
        match (s.name.as_str(), s.container.as_str()) {
            ("layers", _) if next.is_some() => {
                out.push(format!("layer{}", index(next.unwrap()) + 1));
                i += 2;
            }
            ("blocks", _) | ("connect", _) => i += 1,
            ("dense", "Struct:Connect") => i += 1,
            ("ds", "Struct:DenseSum") if next.is_some() => {
                out.push("ds".into());
                out.push((index(next.unwrap()) + 1).to_string());
                out.push("weight".into());
                i += 2;
            }
            ("rg", "Struct:Connect") => i += 1,
            ("rg", "Struct:RgShortcuts") if next.is_some() => {
                out.push((index(next.unwrap()) + 1).to_string());
                out.push("rg".into());
                i += 2;
            }
            ("norm", "Struct:RgShortcut") => i += 1,
            ("norm", "Struct:InnerDs") => {
                if let Some(last) = out.last_mut() {
                    *last = "inner_ds_norm".into();
                }
                i += 1;
            }
            ("conv", "Struct:Projection") => {
                out.push("0".into());
                i += 1;
            }
            ("bn", "Struct:Projection") => {
                out.push("1".into());
                i += 1;
            }
            ("gamma", c) if c.contains("Norm") => {
                out.push("weight".into());
                i += 1;
            }
            ("beta", c) if c.contains("Norm") => {
                out.push("bias".into());
                i += 1;
            }
            _ => {
                out.push(s.name.clone());
                i += 1;
            }
        }
    }
    let transposed = segs
        .last()
        .is_some_and(|s| s.name == "weight" && s.container == "Struct:Linear");
    (out.join("."), transposed)
}
