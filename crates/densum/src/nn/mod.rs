//! Layers with no opinion about papers: convolution builders with torchvision's ResNet init,
//! normalisation kinds, attention (SE, CBAM), drop path, and the Flex fast paths ([`fast`]).

pub mod attention;
pub mod conv;
pub mod drop_path;
pub mod fast;
pub mod norm;

pub use attention::{
    AttentionKind, Cbam, SqueezeExcite, apply_attention, attention, attention_macs,
};
pub use conv::{Projection, batch_norm, conv, relu};
pub use drop_path::DropPath;
pub use fast::conv::{conv_forward, conv2d_fast};
pub use fast::eltwise::add_relu;
pub use fast::norm::{
    batch_norm_forward, batch_norm_forward_with, batch_norm_sum_forward, conv_bn_forward,
    conv_bn_sum_forward, group_norm_forward,
};
pub use fast::pool::{avg_pool_forward, max_pool_forward};
pub use norm::{FreeBatchNorm, FreeNorm, NormKind, ShortcutNorm, apply_free_norm, gn_groups};
