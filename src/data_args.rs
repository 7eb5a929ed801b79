//! The `--data` flags that `mnet train`, `mnet search`, `mnet eval` and
//! `mnet features` share: the source, the keywords of speech commands and
//! the training-time augmentation, turned into [`mnet_search::data`]'s
//! options in one place.

use crate::{Result, UserError};
use clap::Args;
use mnet_search::data::{self, Augment, Dataset, Options, TrainSet};

/// Where the data comes from.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// KIND:PATH — synthetic[:N], synthetic-NAME[:N], npy:DIR (x.npy float32 [N, ...], y.npy int [N]; DIR/val, DIR/test), fashion-mnist:DIR (IDX files), image-folder:DIR (a folder per class; train/ val/ test/), speech-commands:DIR (Speech Commands v2 layout, 49x10 MFCC).
    #[arg(long)]
    pub data: String,
    /// The keywords of speech-commands (comma-separated) [default: yes,no,up,down,left,right,on,off,stop,go].
    #[arg(long, value_delimiter = ',')]
    pub words: Option<Vec<String>>,
}

/// How training features are augmented (audio and image kinds).
#[derive(Args, Clone, Debug)]
pub struct AugmentArgs {
    /// Audio: the share of clips with background noise mixed in.
    #[arg(long, default_value_t = 0.8)]
    pub background_frequency: f32,
    /// Audio: the largest volume of the mixed-in noise.
    #[arg(long, default_value_t = 0.1)]
    pub background_volume: f32,
    /// Audio: the largest random time shift, in ms.
    #[arg(long, default_value_t = 100.0)]
    pub time_shift_ms: f32,
    /// Audio: SpecAugment time masks per clip (width up to --time-mask-width frames).
    #[arg(long, default_value_t = 0)]
    pub time_masks: usize,
    #[arg(long, default_value_t = 10)]
    pub time_mask_width: usize,
    /// Audio: SpecAugment frequency masks per clip (width up to --freq-mask-width coefficients).
    #[arg(long, default_value_t = 0)]
    pub freq_masks: usize,
    #[arg(long, default_value_t = 3)]
    pub freq_mask_width: usize,
    /// Images: random horizontal flips.
    #[arg(long)]
    pub flip: bool,
    /// Images: random crops of up to this share of each side (0 to below 0.5).
    #[arg(long, default_value_t = 0.0)]
    pub crop: f32,
}

impl AugmentArgs {
    /// The augmentation asked for (`None` unless `enabled`), checked.
    pub fn augment(&self, enabled: bool) -> Result<Option<Augment>> {
        let a = Augment {
            background_frequency: self.background_frequency,
            background_volume: self.background_volume,
            time_shift_ms: self.time_shift_ms,
            time_masks: self.time_masks,
            time_mask_width: self.time_mask_width,
            freq_masks: self.freq_masks,
            freq_mask_width: self.freq_mask_width,
            flip: self.flip,
            crop: self.crop,
        };
        a.check().map_err(|e| UserError(format!("error: {e}\n")))?;
        Ok(enabled.then_some(a))
    }

    /// As a JSON object for metrics files.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "background_frequency": self.background_frequency,
            "background_volume": self.background_volume,
            "time_shift_ms": self.time_shift_ms,
            "time_masks": [self.time_masks, self.time_mask_width],
            "freq_masks": [self.freq_masks, self.freq_mask_width],
            "flip": self.flip,
            "crop": self.crop,
        })
    }
}

impl DataArgs {
    pub fn options(&self, seed: u64, augment: Option<Augment>) -> Options {
        Options {
            seed,
            words: self.words.clone(),
            augment,
        }
    }

    /// The training set and the validation set (`val`'s, else --data's).
    pub fn train_val(
        &self,
        val: Option<&str>,
        shape: &[usize],
        classes: usize,
        seed: u64,
        augment: Option<Augment>,
    ) -> Result<(TrainSet<'static>, Dataset)> {
        data::train_val(
            &self.data,
            val,
            shape,
            classes,
            &self.options(seed, augment),
        )
        .map_err(|e| UserError(format!("error: {e}\n")))
    }

    /// The error of --data, as the user sees it.
    pub fn error(&self, e: data::DataError) -> UserError {
        UserError(format!("error: --data {}: {e}\n", self.data))
    }

    /// The source, opened for a network's input and outputs.
    pub fn open(
        &self,
        shape: &[usize],
        classes: usize,
        seed: u64,
        augment: Option<Augment>,
    ) -> Result<data::Source> {
        data::open(&self.data, shape, classes, &self.options(seed, augment))
            .map_err(|e| self.error(e))
    }

    /// One split, unaugmented, and its source.
    pub fn split(
        &self,
        split: data::Split,
        shape: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<(data::Source, Dataset)> {
        let source = self.open(shape, classes, seed, None)?;
        let set = source.split(split).map_err(|e| self.error(e))?;
        Ok((source, set))
    }
}
