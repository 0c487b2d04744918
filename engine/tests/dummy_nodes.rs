//! The engine with node kinds defined here, independent of the real ones: whole nodes,
//! model references, the device lock for heavy nodes, seeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nsync_cache::{Digest, Store};
use nsync_engine::artifact::{ArtifactType, TEXTS};
use nsync_engine::node::*;
use nsync_engine::params::{typed_params, BuildError};
use nsync_engine::progress::{NodeStatus, Silent};
use nsync_engine::{execute, load_pipeline, Mode, Registry, RunOptions};

const COUNT: ArtifactType = ArtifactType {
    name: "count",
    per_item: false,
    ext: "json",
    doc: "a number",
};

static WHOLE_RUNS: AtomicUsize = AtomicUsize::new(0);
static SPANS: Mutex<Vec<(String, Instant, Instant)>> = Mutex::new(Vec::new());
/// Memo pieces (per model and text item) found and computed by `weigh`.
static MEMO_HITS: AtomicUsize = AtomicUsize::new(0);
static MEMO_MISSES: AtomicUsize = AtomicUsize::new(0);

/// `words`: per-item texts from a list parameter; seeded (the output depends on the seed).
struct WordsKind;
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct WordsParams {
    words: Vec<String>,
}
struct Words(WordsParams);

impl NodeKind for WordsKind {
    fn kind(&self) -> &'static str {
        "words"
    }
    fn doc(&self) -> &'static str {
        "test"
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::json_schema!({"type": "object"})
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn build(&self, params: serde_json::Value, _: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        Ok(Box::new(Words(typed_params(params)?)))
    }
}

impl Node for Words {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        vec![]
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "texts",
            ty: TEXTS,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn exec(&self) -> Exec<'_> {
        Exec::PerItem(self)
    }
}

impl PerItem for Words {
    fn items(&self, _: &ItemsCx) -> Result<Vec<WorkItem>, NodeError> {
        Ok(self
            .0
            .words
            .iter()
            .map(|w| WorkItem {
                id: w.clone(),
                fields: BTreeMap::new(),
                source: None,
                inline: None,
            })
            .collect())
    }
    fn open<'a>(&'a self, _cx: &ItemCx) -> Result<Box<dyn ItemWorker + 'a>, NodeError> {
        Ok(Box::new(SeedWriter))
    }
}

struct SeedWriter;
impl ItemWorker for SeedWriter {
    fn process(&mut self, batch: &[&WorkItem], cx: &ItemCx) -> Vec<Result<ItemOutcome, NodeError>> {
        batch
            .iter()
            .map(|w| {
                Ok(ItemOutcome::Done(BTreeMap::from([(
                    "texts".to_string(),
                    format!("{}:{}", w.id, cx.item_seed(&w.id)).into_bytes(),
                )])))
            })
            .collect()
    }
}

/// `weigh`: a whole node that uses a model and counts its per-item input; heavy.
struct WeighKind;
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct WeighParams {
    model: String,
    #[serde(default)]
    sleep_ms: u64,
}
struct Weigh {
    p: WeighParams,
    path: PathBuf,
    name: String,
}

impl NodeKind for WeighKind {
    fn kind(&self) -> &'static str {
        "weigh"
    }
    fn doc(&self) -> &'static str {
        "test"
    }
    fn params_schema(&self) -> schemars::Schema {
        schemars::json_schema!({"type": "object"})
    }
    fn declared_inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec {
            name: "texts".into(),
            ty: TEXTS,
            required: true,
            doc: "texts".into(),
        }]
    }
    fn build(&self, params: serde_json::Value, cx: &BuildCx) -> Result<Box<dyn Node>, BuildError> {
        let p: WeighParams = typed_params(params)?;
        let path = cx.models.get(&p.model).cloned().unwrap_or_default();
        Ok(Box::new(Weigh {
            name: p.model.clone(),
            p,
            path,
        }))
    }
}

impl Node for Weigh {
    fn version(&self) -> u32 {
        1
    }
    fn inputs(&self) -> Vec<InputSpec> {
        WeighKind.declared_inputs()
    }
    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec {
            name: "count",
            ty: COUNT,
        }]
    }
    fn key_params(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn models(&self) -> Vec<String> {
        vec![self.name.clone()]
    }
    fn heavy(&self) -> bool {
        true
    }
    fn exec(&self) -> Exec<'_> {
        Exec::Whole(self)
    }
}

impl Whole for Weigh {
    fn run(&self, cx: &WholeCx) -> Result<BTreeMap<String, Vec<u8>>, NodeError> {
        let start = Instant::now();
        WHOLE_RUNS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.p.sleep_ms));
        let items = cx.inputs.get("texts").and_then(|a| a.items()).unwrap();
        let n = items.len();
        // Per-item work inside a whole node goes through the memo, keyed by content.
        for blob in items.values() {
            let key = nsync_cache::FramedHasher::new("test.weigh")
                .str(1, &self.name)
                .digest(2, &blob.digest)
                .finish();
            match cx.memo.get(&key) {
                Some(bytes) => {
                    assert_eq!(
                        bytes,
                        cx.store
                            .get_blob(&blob.digest)
                            .unwrap()
                            .to_ascii_uppercase()
                    );
                    MEMO_HITS.fetch_add(1, Ordering::SeqCst);
                }
                None => {
                    let upper = cx
                        .store
                        .get_blob(&blob.digest)
                        .unwrap()
                        .to_ascii_uppercase();
                    cx.memo.put(&key, &upper).unwrap();
                    MEMO_MISSES.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let file = if self.path.is_dir() {
            self.path.join("model.safetensors")
        } else {
            self.path.clone()
        };
        let weights = std::fs::read(file).map_err(|e| NodeError::msg(e.to_string()))?;
        SPANS
            .lock()
            .unwrap()
            .push((self.name.clone(), start, Instant::now()));
        Ok(BTreeMap::from([(
            "count".to_string(),
            format!("{n} {}", weights.len()).into_bytes(),
        )]))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(WordsKind);
    r.register(WeighKind);
    r.register_type(COUNT);
    r
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const PIPELINE: &str = r#"
[pipeline]
name = "dummy"
seed = 7

[models.small]
path = "small.bin"

[models.big]
path = "weights"

[nodes.words]
kind = "words"
words = ["a", "b", "c"]

[nodes.weigh_small]
kind = "weigh"
inputs = { texts = "words" }
model = "small"
sleep_ms = 150

[nodes.weigh_big]
kind = "weigh"
inputs = { texts = "words" }
model = "big"
sleep_ms = 150
"#;

fn status(o: &nsync_engine::RunOutcome, node: &str) -> NodeStatus {
    o.record.nodes[node].status
}

#[test]
fn whole_nodes_models_heavy_lock_and_seeds() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "small.bin", "tiny weights");
    std::fs::create_dir(d.path().join("weights")).unwrap();
    write(
        &d.path().join("weights"),
        "model.safetensors",
        "bigger weights here",
    );
    let file = write(d.path(), "p.toml", PIPELINE);
    let reg = registry();
    let store = Store::open(&d.path().join("cache")).unwrap();
    let opts = RunOptions {
        jobs: 3,
        ..Default::default()
    };
    let p = load_pipeline(&file, &reg).unwrap();

    let first = execute(&p, &store, &opts, &Silent, Mode::Run).unwrap();
    assert!(first.ok, "{:#?}", first.record.nodes);
    assert_eq!(status(&first, "weigh_small"), NodeStatus::Executed);
    assert_eq!(status(&first, "weigh_big"), NodeStatus::Executed);
    assert_eq!(WHOLE_RUNS.load(Ordering::SeqCst), 2);
    // Heavy nodes never overlap, even with free worker threads.
    let spans = SPANS.lock().unwrap().clone();
    assert_eq!(spans.len(), 2);
    let (a, b) = (&spans[0], &spans[1]);
    assert!(
        a.2 <= b.1 || b.2 <= a.1,
        "heavy nodes overlapped: {spans:?}"
    );
    let big = first.artifacts["weigh_big"]["count"].clone();
    assert_eq!(store.get_blob(&big.digest()).unwrap(), b"3 19");
    // Seeded items: the output depends on the pipeline seed and the item id only.
    let words = &first.artifacts["words"]["texts"];
    let a_bytes = store.get_blob(&words.items().unwrap()["a"].digest).unwrap();
    assert_eq!(
        String::from_utf8(a_bytes).unwrap(),
        format!("a:{}", item_seed(7, "a"))
    );

    // Rerun: everything cached, nothing recomputed.
    let again = execute(&p, &store, &opts, &Silent, Mode::Run).unwrap();
    assert_eq!(status(&again, "weigh_big"), NodeStatus::Cached);
    assert_eq!(WHOLE_RUNS.load(Ordering::SeqCst), 2);

    // New weights for one model rerun exactly the node that uses it.
    std::thread::sleep(Duration::from_millis(20));
    write(
        &d.path().join("weights"),
        "model.safetensors",
        "new weights!!",
    );
    let p = load_pipeline(&file, &reg).unwrap();
    let third = execute(&p, &store, &opts, &Silent, Mode::Run).unwrap();
    assert_eq!(status(&third, "weigh_big"), NodeStatus::Executed);
    assert_eq!(status(&third, "weigh_small"), NodeStatus::Cached);
    assert_eq!(status(&third, "words"), NodeStatus::Cached);
    let fp = third.record.nodes["weigh_big"]
        .fingerprint
        .as_ref()
        .unwrap();
    assert_ne!(
        fp.models["big"],
        first.record.nodes["weigh_big"]
            .fingerprint
            .as_ref()
            .unwrap()
            .models["big"]
    );

    // Adding an item keeps the others' seeds (and so their outputs and keys).
    let more = PIPELINE.replace("[\"a\", \"b\", \"c\"]", "[\"a\", \"b\", \"c\", \"d\"]");
    write(d.path(), "p.toml", &more);
    let p = load_pipeline(&file, &reg).unwrap();
    let fourth = execute(&p, &store, &opts, &Silent, Mode::Run).unwrap();
    let w = &fourth.record.nodes["words"];
    assert_eq!((w.items_computed, w.items_cached), (1, 3));
    // The whole nodes rerun, but only the new item's memo pieces are computed.
    assert_eq!(status(&fourth, "weigh_big"), NodeStatus::Executed);
    // First run: 2 × 3 computed; new weights for `big`: its 3 found (the memo key names the
    // model, not its digest); now: 2 × 3 found, 2 computed.
    assert_eq!(MEMO_MISSES.load(Ordering::SeqCst), 2 * 3 + 2);
    assert_eq!(MEMO_HITS.load(Ordering::SeqCst), 3 + 2 * 3);
    // The pieces stay reachable from the run record, so `cache gc` keeps them.
    let (_, reach) =
        nsync_engine::gc::reachable(&store, &nsync_engine::gc::KeepPolicy { keep_last: 1 })
            .unwrap();
    let memo = fourth.record.nodes["weigh_big"]
        .memo
        .expect("memo list recorded");
    let list = nsync_engine::memo::parse_list(&store.get_blob(&memo).unwrap()).unwrap();
    assert_eq!(list.len(), 4);
    for (entry, blob) in list {
        assert!(reach.entries.contains(&entry) && reach.blobs.contains(&blob));
    }

    // A changed seed changes every seeded item.
    write(d.path(), "p.toml", &more.replace("seed = 7", "seed = 8"));
    let p = load_pipeline(&file, &reg).unwrap();
    let fifth = execute(&p, &store, &opts, &Silent, Mode::Run).unwrap();
    assert_eq!(fifth.record.nodes["words"].items_computed, 4);
}

#[test]
fn missing_models_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let reg = registry();
    // Undeclared model: a validation error with a hint.
    let file = write(
        d.path(),
        "p.toml",
        &PIPELINE.replace("model = \"small\"", "model = \"smal\""),
    );
    let e = load_pipeline(&file, &reg).err().unwrap().to_string();
    assert!(
        e.contains("uses model `smal`, which is not declared")
            && e.contains("did you mean `small`?"),
        "{e}"
    );
    // Declared but absent on disk: the node fails, naming the path and the fix.
    let file = write(d.path(), "p.toml", PIPELINE);
    let p = load_pipeline(&file, &reg).unwrap();
    let store = Store::open(&d.path().join("cache")).unwrap();
    let o = execute(
        &p,
        &store,
        &RunOptions {
            jobs: 1,
            ..Default::default()
        },
        &Silent,
        Mode::Run,
    )
    .unwrap();
    assert!(!o.ok);
    let err = o.record.nodes["weigh_small"].error.clone().unwrap();
    assert!(
        err.contains("small.bin does not exist") && err.contains("[models.small]"),
        "{err}"
    );
    let _ = Digest::of(b"");
}
