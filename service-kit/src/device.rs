//! Where a service runs its model and in what precision: the `device` (`"cpu"`, `"cuda"`,
//! `"cuda:N"`) and `dtype` (`"f32"`, `"bf16"`, `"f16"`) keys of both services' configs.
//!
//! A CUDA device needs a binary built with the `cuda` feature (`--features cuda` on the
//! service crate; docs/GPU.md); asking a CPU-only build for one is a configuration error that
//! names the feature, reported at start-up with the other problems.

use std::fmt;
use std::str::FromStr;

use model_runtime::candle_core::{DType, Device};

/// Whether this binary was built with the `cuda` feature (candle's CUDA kernels linked in).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// A compute device as the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU (the default).
    #[default]
    Cpu,
    /// CUDA device `ordinal` (`"cuda"` is `"cuda:0"`).
    Cuda {
        /// Device ordinal.
        ordinal: usize,
    },
}

/// An activation (and KV cache) dtype as the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtypeSpec {
    /// 32-bit float (the default; the CPU's fast path).
    #[default]
    F32,
    /// bfloat16 (the usual GPU choice).
    Bf16,
    /// IEEE half precision.
    F16,
}

/// Why a device or dtype setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not `cpu`, `cuda` or `cuda:N`.
    #[error("{0:?} is not a device: expected \"cpu\", \"cuda\" or \"cuda:N\"")]
    UnknownDevice(String),
    /// Not `f32`, `bf16` or `f16`.
    #[error("{0:?} is not a dtype: expected \"f32\", \"bf16\" or \"f16\"")]
    UnknownDtype(String),
    /// A CUDA device asked of a binary built without the `cuda` feature.
    #[error(
        "{device} needs a binary built with the `cuda` feature (cargo build --release --features \
         cuda, see docs/GPU.md); this one is CPU-only: set device = \"cpu\""
    )]
    CudaNotBuilt {
        /// The device asked for.
        device: DeviceSpec,
    },
    /// The device could not be opened (no GPU, driver or CUDA libraries, bad ordinal).
    #[error("opening {device}: {reason}")]
    Open {
        /// The device.
        device: DeviceSpec,
        /// The runtime's reason.
        reason: String,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || DeviceError::UnknownDevice(s.to_string());
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda { ordinal: 0 }),
            other => {
                let ordinal = other.strip_prefix("cuda:").ok_or_else(unknown)?;
                if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unknown());
                }
                let ordinal = ordinal.parse().map_err(|_| unknown())?;
                Ok(DeviceSpec::Cuda { ordinal })
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl DeviceSpec {
    /// Refuses a CUDA device in a binary built without the `cuda` feature.
    pub fn check_built(self) -> Result<Self, DeviceError> {
        self.check_built_with(CUDA_BUILT)
    }

    fn check_built_with(self, cuda_built: bool) -> Result<Self, DeviceError> {
        match self {
            DeviceSpec::Cuda { .. } if !cuda_built => {
                Err(DeviceError::CudaNotBuilt { device: self })
            }
            _ => Ok(self),
        }
    }

    /// Opens the device (for CUDA: the driver, a context and a stream on that GPU).
    pub fn open(self) -> Result<Device, DeviceError> {
        match self.check_built()? {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda { ordinal } => {
                Device::new_cuda(ordinal).map_err(|e| DeviceError::Open {
                    device: self,
                    reason: e.to_string(),
                })
            }
        }
    }
}

impl FromStr for DtypeSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(DtypeSpec::F32),
            "bf16" => Ok(DtypeSpec::Bf16),
            "f16" => Ok(DtypeSpec::F16),
            _ => Err(DeviceError::UnknownDtype(s.to_string())),
        }
    }
}

impl fmt::Display for DtypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DtypeSpec::F32 => "f32",
            DtypeSpec::Bf16 => "bf16",
            DtypeSpec::F16 => "f16",
        })
    }
}

impl DtypeSpec {
    /// candle's dtype.
    pub fn candle(self) -> DType {
        match self {
            DtypeSpec::F32 => DType::F32,
            DtypeSpec::Bf16 => DType::BF16,
            DtypeSpec::F16 => DType::F16,
        }
    }
}

/// Where and how a model runs: the device and the dtype, parsed and checked against the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placement {
    /// The device.
    pub device: DeviceSpec,
    /// The activation and KV dtype.
    pub dtype: DtypeSpec,
}

impl Placement {
    /// Parses the two config values; a CUDA device in a CPU-only build is refused here.
    pub fn parse(device: &str, dtype: &str) -> Result<Self, DeviceError> {
        Ok(Self {
            device: device.parse::<DeviceSpec>()?.check_built()?,
            dtype: dtype.parse()?,
        })
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.device, self.dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        for (s, want, shown) in [
            ("cpu", DeviceSpec::Cpu, "cpu"),
            ("CPU", DeviceSpec::Cpu, "cpu"),
            ("cuda", DeviceSpec::Cuda { ordinal: 0 }, "cuda:0"),
            ("cuda:0", DeviceSpec::Cuda { ordinal: 0 }, "cuda:0"),
            ("cuda:3", DeviceSpec::Cuda { ordinal: 3 }, "cuda:3"),
        ] {
            let d: DeviceSpec = s.parse().unwrap();
            assert_eq!(d, want, "{s}");
            assert_eq!(d.to_string(), shown);
        }
        for bad in [
            "", "gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "metal", "cuda0",
        ] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert_eq!(err, DeviceError::UnknownDevice(bad.into()));
            assert!(err.to_string().contains("cuda:N"), "{err}");
        }
    }

    #[test]
    fn dtypes_parse_and_print() {
        for (s, want, candle) in [
            ("f32", DtypeSpec::F32, DType::F32),
            ("bf16", DtypeSpec::Bf16, DType::BF16),
            ("F16", DtypeSpec::F16, DType::F16),
        ] {
            let d: DtypeSpec = s.parse().unwrap();
            assert_eq!((d, d.candle()), (want, candle));
            assert_eq!(d.to_string(), s.to_ascii_lowercase());
        }
        for bad in ["", "fp32", "float16", "int8"] {
            assert!(
                bad.parse::<DtypeSpec>()
                    .unwrap_err()
                    .to_string()
                    .contains("bf16")
            );
        }
    }

    #[test]
    fn cuda_in_a_cpu_only_build_names_the_feature() {
        let cuda = DeviceSpec::Cuda { ordinal: 1 };
        let err = cuda.check_built_with(false).unwrap_err();
        assert_eq!(err, DeviceError::CudaNotBuilt { device: cuda });
        let text = err.to_string();
        assert!(
            text.contains("cuda:1") && text.contains("`cuda` feature"),
            "{text}"
        );
        assert_eq!(cuda.check_built_with(true), Ok(cuda));
        assert_eq!(DeviceSpec::Cpu.check_built_with(false), Ok(DeviceSpec::Cpu));
    }

    #[test]
    fn the_cpu_placement_opens_everywhere() {
        let p = Placement::parse("cpu", "f32").unwrap();
        assert_eq!(p, Placement::default());
        assert!(matches!(p.device.open().unwrap(), Device::Cpu));
        if !CUDA_BUILT {
            assert!(matches!(
                Placement::parse("cuda:0", "bf16"),
                Err(DeviceError::CudaNotBuilt { .. })
            ));
            assert!(matches!(
                DeviceSpec::Cuda { ordinal: 0 }.open(),
                Err(DeviceError::CudaNotBuilt { .. })
            ));
        }
    }
}
