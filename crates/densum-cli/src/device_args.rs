//! `--device` and `--precision`, shared by train, eval, bench and predict.

use anyhow::Result;
use clap::Args;
use densum::Device;
use densum::device::{DeviceSpec, Precision};

/// Where a command runs and in which number format.
#[derive(Args, Debug, Default, Clone)]
pub struct DeviceArgs {
    /// Device: cpu (Burn's Flex backend, the default), cuda[:N], rocm[:N], wgpu[:N],
    /// vulkan[:N] or metal[:N]; GPU backends need the binary built with the feature of the
    /// same name.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Number format: f32 (bf16 and f16 are refused: Burn 0.22 has no autocast).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

impl DeviceArgs {
    /// The Burn device, after checking the precision and that the device exists.
    pub fn device(&self) -> Result<Device> {
        self.precision.check(&self.device)?;
        Ok(self.device.to_device()?)
    }
}
