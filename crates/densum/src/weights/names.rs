//! Tensor names (spec section 6): from the path of a parameter in densum's module tree to
//! the name it has in a weight file (torchvision's where torchvision has the model).
//!
//! Two schemes: the ResNet one (`conv1`, `bn1`, `layer{s}.{b}...`, `fc`; also timm's Res2Net
//! names), and torchvision's DenseNet one, chosen for any network made of dense layers
//! ([`NameScheme::of`]): `features.conv0`, `features.norm0`,
//! `features.denseblock{s}.denselayer{j}.{norm1,conv1,norm2,conv2}`,
//! `features.transition{n}.{norm,conv}`, `features.norm5`, `classifier`. Dense2Net adds
//! `...denselayer{j}.res2.{convs,bns}.{i}`.

use burn::module::{Module, ModuleVisitor};

/// How a network's tensors are named in files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NameScheme {
    /// torchvision's ResNet names (and timm's Res2Net names, which extend them).
    #[default]
    ResNet,
    /// torchvision's DenseNet names.
    DenseNet,
}

impl NameScheme {
    /// The scheme of `module`: DenseNet's when it contains dense layers.
    pub fn of<M: Module>(module: &M) -> Self {
        struct Detect(bool);
        impl ModuleVisitor for Detect {
            fn enter_module(&mut self, _name: &str, container_type: &str) {
                self.0 |= container_type == "Struct:DenseLayer";
            }
        }
        let mut d = Detect(false);
        module.visit(&mut d);
        if d.0 {
            NameScheme::DenseNet
        } else {
            NameScheme::ResNet
        }
    }

    /// Renames a ResNet-scheme name into this scheme.
    pub fn rename(self, name: String) -> String {
        match self {
            NameScheme::ResNet => name,
            NameScheme::DenseNet => densenet_name(&name),
        }
    }
}

/// torchvision's DenseNet name of a ResNet-scheme name: stage s (1-based) is
/// `denseblock{s}`, its block j `denselayer{j+1}`, and the transition that starts stage s
/// follows `denseblock{s-1}`, hence `transition{s-1}`.
fn densenet_name(name: &str) -> String {
    let (head, rest) = name.split_once('.').unwrap_or((name, ""));
    let tail = |prefix: &str| {
        if rest.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{rest}")
        }
    };
    match head {
        "conv1" => tail("features.conv0"),
        "bn1" => tail("features.norm0"),
        "final_bn" => tail("features.norm5"),
        "fc" => tail("classifier"),
        _ => match head
            .strip_prefix("layer")
            .and_then(|s| s.parse::<usize>().ok())
        {
            Some(s) => {
                let (block, rest) = rest.split_once('.').unwrap_or((rest, ""));
                match block.parse::<usize>() {
                    Ok(j) => format!("features.denseblock{s}.denselayer{}.{rest}", j + 1),
                    Err(_) if block == "transition" => {
                        format!("features.transition{}.{rest}", s - 1)
                    }
                    Err(_) => format!("features.denseblock{s}.{block}.{rest}"),
                }
            }
            None => name.to_string(),
        },
    }
}

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
    scheme: NameScheme,
}

impl PathTracker {
    /// A tracker naming tensors in `module`'s scheme ([`NameScheme::of`]).
    pub fn for_module<M: Module>(module: &M) -> Self {
        PathTracker {
            stack: Vec::new(),
            scheme: NameScheme::of(module),
        }
    }

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
        let (name, transposed) = spec_name(&self.stack);
        (self.scheme.rename(name), transposed)
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
            // timm's Bottle2neck holds `convs`/`bns` directly.
            ("res2", "Struct:Res2Bottleneck") => i += 1,
            ("dense", "Struct:Connect") => i += 1,
            ("ds", "Struct:DenseSum") if next.is_some() => {
                out.push("ds".into());
                out.push((index(next.unwrap()) + 1).to_string());
                out.push("weight".into());
                i += 2;
            }
            ("rg", "Struct:Connect") | ("deluge", "Struct:Connect") => i += 1,
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
