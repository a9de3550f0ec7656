//! The benchmarked methods and the `EvaluateRequest` each sends: rank scoring in the
//! shared-prompt layout; KV methods send every prompt position (selection `all`) at one payload
//! with per-block scales; T2T is the text method with a generated hint (the sharer generates up
//! to its `max_hint_tokens`, 64 by default, greedily; the receiver prefills the message before
//! its prompt and scores).

use std::fmt;
use std::str::FromStr;

use kvwire_proto::v1 as pb;

/// A KV payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// fp16, no scales.
    Fp16,
    /// int8, fp16 per-block scales.
    Int8,
    /// int4, fp16 per-block scales.
    Int4,
}

impl Payload {
    /// The three payloads, in order.
    pub const ALL: [Payload; 3] = [Payload::Fp16, Payload::Int8, Payload::Int4];

    fn label(self) -> &'static str {
        match self {
            Payload::Fp16 => "fp16",
            Payload::Int8 => "int8",
            Payload::Int4 => "int4",
        }
    }

    fn wire(self) -> pb::Payload {
        match self {
            Payload::Fp16 => pb::Payload::Fp16,
            Payload::Int8 => pb::Payload::Int8,
            Payload::Int4 => pb::Payload::Int4,
        }
    }
}

/// One benchmarked method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The receiver alone.
    ReceiverOnly,
    /// Same-model KV transfer (the receiver's model as its own sharer).
    Kv(Payload),
    /// C2C: the sharer model's cache projected and fused by a fuser.
    C2c(Payload),
    /// Text to text: a generated sharer message.
    T2t,
}

/// The two service set-ups a benchmark runs, one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The receiver with its own model as sharer (identity fuser): receiver-only and KV.
    SameModel,
    /// The receiver with the sharer model (C2C fuser, or none): C2C and T2T.
    Pair,
}

impl Phase {
    /// Its label in reports.
    pub fn label(self) -> &'static str {
        match self {
            Phase::SameModel => "same-model",
            Phase::Pair => "pair",
        }
    }
}

impl Method {
    /// Every method, in report order.
    pub fn all() -> Vec<Method> {
        let mut v = vec![Method::ReceiverOnly];
        v.extend(Payload::ALL.map(Method::Kv));
        v.extend(Payload::ALL.map(Method::C2c));
        v.push(Method::T2t);
        v
    }

    /// The set-up it runs in.
    pub fn phase(self) -> Phase {
        match self {
            Method::ReceiverOnly | Method::Kv(_) => Phase::SameModel,
            Method::C2c(_) | Method::T2t => Phase::Pair,
        }
    }

    /// Whether it moves a KV cache.
    pub fn is_kv(self) -> bool {
        matches!(self, Method::Kv(_) | Method::C2c(_))
    }

    /// The request for one item.
    pub fn request(self, example: pb::Example) -> pb::EvaluateRequest {
        let transfer = |payload: Payload| pb::TransferSettings {
            payload: payload.wire() as i32,
            granularity: pb::Granularity::PerBlock as i32,
            selection: pb::Selection::All as i32,
            keep_fraction: 1.0,
            ..Default::default()
        };
        let (method, transfer, text) = match self {
            Method::ReceiverOnly => (pb::Method::ReceiverOnly, None, None),
            Method::Kv(p) => (pb::Method::Kv, Some(transfer(p)), None),
            Method::C2c(p) => (pb::Method::C2c, Some(transfer(p)), None),
            Method::T2t => (
                pb::Method::Text,
                None,
                Some(pb::TextSettings {
                    kind: pb::MessageKind::Hint as i32,
                    byte_cap: 0,
                }),
            ),
        };
        pb::EvaluateRequest {
            example: Some(example),
            method: method as i32,
            transfer,
            text,
            scoring: pb::Scoring::Rank as i32,
            layout: pb::Layout::SharedPrompt as i32,
            ..Default::default()
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::ReceiverOnly => f.write_str("receiver-only"),
            Method::Kv(p) => write!(f, "kv-{}", p.label()),
            Method::C2c(p) => write!(f, "c2c-{}", p.label()),
            Method::T2t => f.write_str("t2t"),
        }
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::all()
            .into_iter()
            .find(|m| m.to_string() == s)
            .ok_or_else(|| {
                let known: Vec<String> = Method::all().iter().map(Method::to_string).collect();
                format!("unknown method {s:?}; known: {}", known.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for m in Method::all() {
            assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
        }
        assert!("kv-int2".parse::<Method>().is_err());
    }
}
