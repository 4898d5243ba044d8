//! Shortcut-reuse maps: how strongly each layer of a stage reads each earlier one, from the
//! learned weights alone (no data needed).
//!
//! - DSNet ([`ConnectKind::DenseSum`](crate::connect::ConnectKind::DenseSum)): for block
//!   l = 1..n-1 and earlier output i < l, the mean over channels of |W_{l,i}| (`layer{s}.ds.{l}`
//!   row i; with scalar weights the one |w|).
//! - DelugeNet ([`ConnectKind::Deluge`](crate::connect::ConnectKind::Deluge)): for block
//!   l = 0..n-1 and each input of `H = [x, X_0, ..., X_l]`, the mean over channels of
//!   |W_l[i]| (`layer{s}.deluge.{l}` row i).
//! - DenseNet (concatenation), as Huang et al. 2017's Figure 5: for each dense layer l's first
//!   convolution (the 1x1 of a BC layer), the mean |w| over the weights that read the input
//!   channels coming from source s — the block's input (`input`) or layer s's new features —
//!   i.e. the L1 norm normalised by the number of weights. The last row reads the stage's
//!   whole concatenation: the next stage's transition convolution (`transition`) or, for the
//!   last stage, the classifier (`classifier`, its weights over those channels).
//!
//! Rows (targets) and columns (sources) are named by block index within the stage, as in the
//! weight files; `input` is the stage's input (after its transition).

use std::fmt::Write as _;
use std::path::Path;

use burn::tensor::Tensor;

use super::figure::HeatPanel;
use crate::block::Block;
use crate::connect::Connect;
use crate::error::{DensumError, Result};
use crate::net::Net;
use crate::stage::Stage;

/// The reuse map of one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct ReuseMap {
    /// `layer{s}`.
    pub stage: String,
    /// `dense_sum`, `deluge` or `concat`.
    pub kind: &'static str,
    /// Row labels (targets).
    pub targets: Vec<String>,
    /// Column labels (sources).
    pub sources: Vec<String>,
    /// `values[target][source]`, `None` where the target does not read the source.
    pub values: Vec<Vec<Option<f32>>>,
}

fn host(t: Tensor<2>) -> Result<(Vec<f32>, [usize; 2])> {
    let dims = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| DensumError::Config(format!("reading weights: {e:?}")))?;
    Ok((v, dims))
}

/// Mean |row| of each row of a `[rows, C]` tensor.
fn row_means(t: Tensor<2>) -> Result<Vec<f32>> {
    let (v, [_, c]) = host(t)?;
    Ok(v.chunks(c)
        .map(|r| r.iter().map(|x| x.abs()).sum::<f32>() / c as f32)
        .collect())
}

/// Mean |w| of `w` (`[out, in, kh, kw]` flattened to `[out, in · kh · kw]`) over the input
/// channels `ranges[s]`, for each source s.
fn conv_means(w: Tensor<4>, ranges: &[(usize, usize)]) -> Result<Vec<f32>> {
    let [out, inp, kh, kw] = w.dims();
    let (v, _) = host(w.reshape([out, inp * kh * kw]))?;
    let taps = kh * kw;
    Ok(ranges
        .iter()
        .map(|&(a, b)| {
            let sum: f32 = v
                .chunks(inp * taps)
                .map(|row| row[a * taps..b * taps].iter().map(|x| x.abs()).sum::<f32>())
                .sum();
            sum / (out * (b - a) * taps) as f32
        })
        .collect())
}

fn labels(prefix: Option<&str>, range: std::ops::Range<usize>) -> Vec<String> {
    prefix
        .map(str::to_string)
        .into_iter()
        .chain(range.map(|i| i.to_string()))
        .collect()
}

fn dense_sum_map(name: String, stage: &Stage) -> Result<Option<ReuseMap>> {
    let Some(ds) = stage.connect.dense_sum() else {
        return Ok(None);
    };
    let n = stage.blocks.len();
    let mut values = Vec::new();
    for (k, w) in ds.weights().into_iter().enumerate() {
        let Some(w) = w else {
            return Err(DensumError::Config(format!(
                "{name}: this DSNet's shortcut weights are fixed at 1 (ds_weight none), not learned"
            )));
        };
        let means = row_means(w)?;
        let l = k + 1;
        values.push((0..n - 1).map(|i| (i < l).then(|| means[i])).collect());
    }
    Ok(Some(ReuseMap {
        stage: name,
        kind: "dense_sum",
        targets: labels(None, 1..n),
        sources: labels(None, 0..n - 1),
        values,
    }))
}

fn deluge_map(name: String, stage: &Stage) -> Result<Option<ReuseMap>> {
    let Some(d) = stage.connect.cross_layer() else {
        return Ok(None);
    };
    let n = stage.blocks.len();
    let mut values = Vec::new();
    for w in d.weights() {
        let means = row_means(w)?;
        values.push((0..n + 1).map(|i| means.get(i).copied()).collect());
    }
    Ok(Some(ReuseMap {
        stage: name,
        kind: "deluge",
        targets: labels(None, 0..n),
        sources: labels(Some("input"), 0..n),
        values,
    }))
}

/// The reader of a dense stage's whole output: the next stage's transition, or the classifier.
fn concat_reader(net: &Net, s: usize) -> Result<(&'static str, Tensor<4>)> {
    match net.layers.get(s + 1) {
        Some(next) => match &next.transition {
            Some(t) => Ok(("transition", t.conv.weight.val())),
            None => Err(DensumError::Config(format!(
                "layer{}: no transition reads layer{}'s concatenation",
                s + 2,
                s + 1
            ))),
        },
        None => {
            // Burn's Linear weight is [in, out]; as a 1x1 convolution it is [out, in, 1, 1].
            let w = net.fc.weight.val();
            let [inp, out] = w.dims();
            Ok(("classifier", w.swap_dims(0, 1).reshape([out, inp, 1, 1])))
        }
    }
}

fn concat_map(net: &Net, s: usize) -> Result<Option<ReuseMap>> {
    let stage = &net.layers[s];
    let layers: Vec<_> = stage
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::DenseLayer(d) => Some(d),
            _ => None,
        })
        .collect();
    if layers.len() != stage.blocks.len() || layers.is_empty() {
        return Ok(None);
    }
    let c0 = layers[0].conv1.weight.dims()[1];
    let k = match &layers[0].conv2 {
        Some(c) => c.weight.dims()[0],
        None => layers[0].conv1.weight.dims()[0],
    };
    let n = layers.len();
    // Channels of the concatenation [input, X_0, ..., X_{n-1}] by source.
    let ranges: Vec<(usize, usize)> = std::iter::once((0, c0))
        .chain((0..n).map(|j| (c0 + j * k, c0 + (j + 1) * k)))
        .collect();
    let mut values = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        let means = conv_means(layer.conv1.weight.val(), &ranges[..l + 1])?;
        values.push((0..n + 1).map(|i| means.get(i).copied()).collect());
    }
    let (reader, w) = concat_reader(net, s)?;
    values.push(conv_means(w, &ranges)?.into_iter().map(Some).collect());
    let mut targets = labels(None, 0..n);
    targets.push(reader.into());
    Ok(Some(ReuseMap {
        stage: format!("layer{}", s + 1),
        kind: "concat",
        targets,
        sources: labels(Some("input"), 0..n),
        values,
    }))
}

/// The reuse map of every stage of `net`, or an error naming the connectivity when it has no
/// learned cross-layer connections.
pub fn reuse_maps(net: &Net) -> Result<Vec<ReuseMap>> {
    let mut maps = Vec::new();
    for (s, stage) in net.layers.iter().enumerate() {
        let name = format!("layer{}", s + 1);
        let map = match &stage.connect {
            Connect::DenseSum(_) => dense_sum_map(name, stage)?,
            Connect::Deluge(_) => deluge_map(name, stage)?,
            Connect::Concat(_) => concat_map(net, s)?,
            Connect::Residual(_) | Connect::DenseIdentity(_) | Connect::Rg(_) => None,
        };
        maps.extend(map);
    }
    if maps.is_empty() {
        let what = match net.layers.first().map(|s| &s.connect) {
            Some(Connect::Residual(_)) => "identity shortcuts (ResNet family)",
            Some(Connect::DenseIdentity(_)) => "unweighted dense identity shortcuts",
            Some(Connect::Rg(_)) => "RG shortcuts, which read only the previous block",
            _ => "no dense connections",
        };
        return Err(DensumError::Config(format!(
            "this network has {what}: no learned cross-layer connections to map; reuse maps \
             exist for DSNet (dense weighted sums), DelugeNet (cross-layer combinations) and \
             DenseNet-family (concatenation) networks"
        )));
    }
    Ok(maps)
}

/// The maps as CSV: `stage,kind,target,source,mean_abs_weight`, one row per connection.
pub fn to_csv(maps: &[ReuseMap]) -> String {
    let mut out = String::from("stage,kind,target,source,mean_abs_weight\n");
    for m in maps {
        for (t, row) in m.targets.iter().zip(&m.values) {
            for (s, v) in m.sources.iter().zip(row) {
                if let Some(v) = v {
                    let _ = writeln!(out, "{},{},{t},{s},{v}", m.stage, m.kind);
                }
            }
        }
    }
    out
}

/// Writes the CSV of [`to_csv`] to `path`.
pub fn write_csv(maps: &[ReuseMap], path: &Path) -> Result<()> {
    std::fs::write(path, to_csv(maps)).map_err(|e| DensumError::io(path, e))
}

/// One heat-map panel per stage.
pub fn panels(maps: &[ReuseMap]) -> Vec<HeatPanel> {
    maps.iter()
        .map(|m| {
            let (x, y) = match m.kind {
                "dense_sum" => ("earlier output i", "block l (mean |W_l,i|)"),
                "deluge" => ("input of H", "block l (mean |W_l[i]|)"),
                _ => ("source layer s", "target layer (mean |w|)"),
            };
            HeatPanel {
                title: m.stage.clone(),
                rows: m.targets.clone(),
                cols: m.sources.clone(),
                values: m.values.clone(),
                axes: (x.into(), y.into()),
            }
        })
        .collect()
}
