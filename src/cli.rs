//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "nsync", version, about = "Teach diffusion models an artist's style with NSYNC, as a declarative, cached pipeline", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Cache folder [default: $NSYNC_CACHE_DIR, else $XDG_CACHE_HOME/nsync, else ~/.cache/nsync]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a pipeline: compute what is not cached yet.
    Run(RunArgs),
    /// Show what `run` would do, per node and item count, without doing it.
    Plan {
        pipeline: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Explain why a node would rerun, against the last run of the same pipeline.
    Explain {
        pipeline: PathBuf,
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a node's latest outputs as ordinary files (PNG, TXT, ...).
    Export {
        pipeline: PathBuf,
        node: String,
        /// Destination folder (created if missing).
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Only this output port (default: all).
        #[arg(long)]
        port: Option<String>,
    },
    /// Draw the pipeline's graph.
    Dag {
        pipeline: PathBuf,
        #[arg(long, value_enum, default_value_t = DagFormat::Mermaid)]
        format: DagFormat,
    },
    /// Past runs.
    Runs {
        #[command(subcommand)]
        command: Option<RunsCommand>,
    },
    /// Inspect and maintain the cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Print the JSON Schema of pipeline files.
    Schema,
    /// Validate a pipeline file without running anything.
    Check { pipeline: PathBuf },
    /// Generate one image with Stable Diffusion, outside any pipeline.
    Sample(SampleArgs),
    /// Caption images with a captioning model (BLIP), outside any pipeline.
    Caption(crate::commands::caption::CaptionArgs),
    /// CSD, CMMD, KID and FID of generated image folders against real ones, outside any
    /// pipeline (the same code as the `evaluate` node).
    Eval(EvalArgs),
    /// Models: write tiny random ones for tests and demos.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Benchmarks that print comparison tables.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Args)]
pub struct RunArgs {
    pub pipeline: PathBuf,
    /// Run only this node (repeatable); its inputs must already be cached.
    #[arg(long, value_name = "NODE")]
    pub only: Vec<String>,
    /// Run this node and everything it depends on, nothing downstream.
    #[arg(long, value_name = "NODE")]
    pub until: Option<String>,
    /// Nodes to run at once [default: number of CPUs].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// JSON Lines events on stdout; the last line is a summary.
    #[arg(long)]
    pub json: bool,
    /// Rehash every cached result used, not only check that it is there.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args)]
pub struct SampleArgs {
    /// A diffusers-layout model folder.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Default: the model's scheduler_config.json.
    #[arg(long, value_parser = ["ddim", "pndm", "ddpm", "euler_a"])]
    pub scheduler: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// WIDTHxHEIGHT in pixels, multiples of 8 [default: the model's native size].
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// DDIM's eta.
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// A safetensors file with one tensor `latents` [1, 4, H/8, W/8]: the initial noise,
    /// used exactly as diffusers' `latents=` argument.
    #[arg(long, value_name = "FILE")]
    pub init_latents: Option<PathBuf>,
    /// Learned token embeddings (diffusers' `learned_embeds.safetensors`).
    #[arg(long, value_name = "FILE")]
    pub embedding: Vec<PathBuf>,
    /// LoRA weights for the UNet (diffusers' `pytorch_lora_weights.safetensors` layout, e.g.
    /// a `contrastive_train` node's `lora` output).
    #[arg(long, value_name = "FILE")]
    pub lora: Option<PathBuf>,
    /// Precision of the text encoder and UNet (the VAE stays f32); half precision is for GPU
    /// builds: on the CPU candle runs it no faster than f32, and less precisely.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    pub dtype: String,
    /// Output PNG.
    #[arg(long, value_name = "PNG")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The real images: a folder, a file or a glob.
    #[arg(long, value_name = "DIR")]
    pub real: PathBuf,
    /// A generated set: `DIR` or `NAME=DIR` (repeatable; one table row each).
    #[arg(long, value_name = "[NAME=]DIR", required = true)]
    pub fake: Vec<String>,
    /// Comma-separated metrics.
    #[arg(long, default_value = "csd,cmmd,kid,fid", value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or safetensors).
    #[arg(long, value_name = "PATH")]
    pub inception: Option<PathBuf>,
    /// CLIP ViT-L/14-336 folder (Hugging Face layout).
    #[arg(long, value_name = "PATH")]
    pub clip: Option<PathBuf>,
    /// CSD checkpoint (the authors' checkpoint.pth, or safetensors).
    #[arg(long, value_name = "PATH")]
    pub csd: Option<PathBuf>,
    /// `tf2015` (standard FID) or `torchvision` (the paper's backbone).
    #[arg(long, default_value = "tf2015", value_parser = ["tf2015", "torchvision"])]
    pub fid_backbone: String,
    /// `pytorch_fid` (bilinear, no antialias) or `clean` (clean-fid's PIL bicubic).
    #[arg(long, default_value = "pytorch_fid", value_parser = ["pytorch_fid", "clean"])]
    pub fid_resize: String,
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,
    /// Default: min(n_real, n_fake, 1000).
    #[arg(long)]
    pub kid_subset_size: Option<usize>,
    /// Bootstrap replicates for confidence intervals (0: none).
    #[arg(long, default_value_t = 0)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Seed of KID's subsets and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Print one JSON object (the metrics table) instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DagFormat {
    Dot,
    Mermaid,
    Json,
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// List runs, newest last.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one run (an id, a unique prefix, or `latest`).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Keep a run (and everything it produced) through `cache gc`.
    Pin { id: String },
    /// Undo `pin`.
    Unpin { id: String },
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Sizes and counts.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Rehash every blob; quarantine corrupt ones so the next run recomputes them.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Remove what no kept run can reach.
    Gc {
        /// Report only; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Runs kept per pipeline (newest first), besides pinned runs.
        #[arg(long, default_value_t = 1)]
        keep_last: usize,
        /// Spare files written within this long (e.g. an interrupted run's items).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write a tiny random model: by default a complete Stable Diffusion in diffusers layout
    /// (loadable by nsync and by diffusers' `StableDiffusionPipeline.from_pretrained`).
    InitTiny {
        /// Destination folder (must not hold a model).
        dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = TinyVariantArg::Sd15)]
        variant: TinyVariantArg,
        /// What to write: `sd`, `evaluators` (`inception.safetensors`, `clip/`,
        /// `csd.safetensors` for `nsync eval` and `evaluate`), or `captioner` (a BLIP folder
        /// for `nsync caption` and the `caption` node).
        #[arg(long, value_enum, default_value_t = TinyKindArg::Sd)]
        kind: TinyKindArg,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TinyKindArg {
    /// Stable Diffusion (diffusers layout).
    Sd,
    /// Feature extractors for the metrics (random Inception, narrow CLIP and CSD).
    Evaluators,
    /// A BLIP captioner (Hugging Face layout) for `nsync caption` and the `caption` node.
    Captioner,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TinyVariantArg {
    /// SD 1.x-like (PNDM, epsilon).
    Sd15,
    /// SD 2.x-like (linear projections, DDIM, v-prediction).
    Sd2,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The engine on a 3-node per-item pipeline: cold run, no-op rerun, rerun after adding
    /// items; hashing throughput; DVC and b3sum side by side when they are installed.
    Engine(crate::commands::bench::EngineBenchArgs),
    /// The SD 1.5-size UNet on random weights, side by side with diffusers / PyTorch: one
    /// guided sampling step at 512 px and one Textual Inversion step at 256 px (bench/sd.sh).
    Sd(crate::commands::bench::sd::SdBenchArgs),
}
