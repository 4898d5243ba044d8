//! Tensor names (README, "Weight files"): from the path of a parameter in densum's module tree to
//! the name it has in a weight file (torchvision's where torchvision has the model).
//!
//! Two schemes: the ResNet one (`conv1`, `bn1`, `layer{s}.{b}...`, `fc`; also timm's Res2Net
//! names), and torchvision's DenseNet one, chosen for any network made of dense layers
//! ([`NameScheme::of`]): `features.conv0`, `features.norm0`,
//! `features.denseblock{s}.denselayer{j}.{norm1,conv1,norm2,conv2}`,
//! `features.transition{n}.{norm,conv}`, `features.norm5`, `classifier`. Dense2Net adds
//! `...denselayer{j}.res2.{convs,bns}.{i}`.
//!
//! Names are built from what densum controls: the modules' field names and the indices of
//! their lists, with a fixed table of rewrites keyed on field names ([`spec_name`]). Burn's
//! container descriptions (`Struct:Conv2d`, `Enum:Block`) are read only for their kind: an
//! enum's variant is no step of a name. Renaming a Rust type never changes a file; renaming
//! a field does, and the name lists pinned in tests/weights.rs say so.

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

/// The field only dense layers have (torchvision's `norm1`, the BN of a layer's input;
/// ResNet blocks call theirs `bn1`).
const DENSE_LAYER_FIELD: &str = "norm1";

impl NameScheme {
    /// The scheme of `module`: DenseNet's when it contains dense layers.
    pub fn of<M: Module>(module: &M) -> Self {
        struct Detect(bool);
        impl ModuleVisitor for Detect {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.0 |= name == DENSE_LAYER_FIELD;
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

/// One step of a module path: the field (or index, or enum variant) entered.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Field name, index or variant name.
    pub name: String,
    /// Whether the step is an enum's variant (no step of a file name).
    pub variant: bool,
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

    /// Entering a field; `container` is Burn's description of what holds it, read only for
    /// whether it is an enum.
    pub fn enter(&mut self, name: &str, container: &str) {
        self.stack.push(Segment {
            name: name.to_string(),
            variant: container.starts_with("Enum:"),
        });
    }

    /// Leaving it.
    pub fn exit(&mut self) {
        self.stack.pop();
    }

    /// The file name of the tensor at the current path, and whether it is stored transposed
    /// (Burn keeps linear weights as `[in, out]`, PyTorch as `[out, in]`).
    pub fn current(&self) -> (String, bool) {
        let (name, transposed) = spec_name(&self.stack, self.scheme);
        (self.scheme.rename(name), transposed)
    }
}

fn index(s: &Segment) -> usize {
    s.name.parse().unwrap_or(0)
}

/// The classifier's field: Burn's `Linear`, whose weight files store transposed.
const CLASSIFIER_FIELD: &str = "fc";

/// Maps a module path to the file's tensor name (in the ResNet scheme, which
/// [`NameScheme::rename`] turns into `scheme`'s), and whether the tensor is stored
/// transposed. Every rule is keyed on field names.
pub fn spec_name(path: &[Segment], scheme: NameScheme) -> (String, bool) {
    // Enum variants are an implementation detail (Block::Bottleneck, Connect::DenseSum, ...).
    let segs: Vec<&Segment> = path.iter().filter(|s| !s.variant).collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < segs.len() {
        let s = segs[i];
        let next = segs.get(i + 1);
        let last = out.last().map(String::as_str);
        match (s.name.as_str(), next) {
            ("layers", Some(n)) => {
                out.push(format!("layer{}", index(n) + 1));
                i += 2;
                continue;
            }
            ("blocks" | "connect", _) => {}
            // timm's Bottle2neck holds `convs`/`bns` directly; torchvision-style dense layers
            // (Dense2Net) keep `res2`.
            ("res2", _) if scheme == NameScheme::ResNet => {}
            // DSNet's dense weights: block k+1's are `ds.{k+1}.weight`.
            ("ds", Some(n)) => {
                out.extend(["ds".into(), (index(n) + 1).to_string(), "weight".into()]);
                i += 2;
                continue;
            }
            // RGSNet's shortcuts belong to the block: `{k+1}.rg`.
            ("rg", Some(n)) => {
                out.extend([(index(n) + 1).to_string(), "rg".into()]);
                i += 2;
                continue;
            }
            // An RG shortcut's normalisation is the shortcut itself in files.
            ("norm", _) if matches!(last, Some("rg" | "inner_rg")) => {}
            ("norm", _) if last == Some("inner_ds") => {
                if let Some(l) = out.last_mut() {
                    *l = "inner_ds_norm".into();
                }
            }
            // torchvision's `downsample` is a Sequential(conv, bn).
            ("conv", _) if last == Some("downsample") => out.push("0".into()),
            ("bn", _) if last == Some("downsample") => out.push("1".into()),
            ("gamma", _) => out.push("weight".into()),
            ("beta", _) => out.push("bias".into()),
            (name, _) => out.push(name.to_string()),
        }
        i += 1;
    }
    let transposed = segs.len() >= 2
        && segs[segs.len() - 1].name == "weight"
        && segs[segs.len() - 2].name == CLASSIFIER_FIELD;
    (out.join("."), transposed)
}
