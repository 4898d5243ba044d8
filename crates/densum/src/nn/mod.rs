//! Layers with no opinion about papers: convolution builders with the spec's init,
//! normalisation kinds, attention (SE, CBAM) and drop path.

pub mod attention;
pub mod conv;
pub mod drop_path;
pub mod fast_conv;
pub mod fast_dense_head;
pub mod fast_dense_sum;
pub mod fast_eltwise;
pub mod fast_norm;
pub(crate) mod lanes;
pub mod norm;
pub mod tile_gemm;

pub use attention::{
    AttentionKind, Cbam, SqueezeExcite, apply_attention, attention, attention_macs,
};
pub use conv::{Projection, batch_norm, conv, relu};
pub use drop_path::DropPath;
pub use fast_conv::{conv_forward, conv2d_fast};
pub use fast_eltwise::add_relu;
pub use fast_norm::{batch_norm_forward, conv_bn_forward, group_norm_forward};
pub use norm::{FreeBatchNorm, FreeNorm, NormKind, ShortcutNorm, apply_free_norm, gn_groups};
