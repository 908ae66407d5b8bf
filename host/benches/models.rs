//! Model engines on the exported models (host/tests/fixtures/models, written by the training
//! pipeline): the native tree engine per row and batched, TreeSHAP per explanation, and tract on
//! the MLP. `models/bench.py` measures onnxruntime and XGBoost on the same models and rows.
//!   cargo bench -p edgepm --bench models

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgepm::model::{ModelRegistry, TreeModel};
use std::hint::black_box;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn rows(model: &str) -> Vec<Vec<f32>> {
    let mut r = csv::Reader::from_path(fixtures().join(model).join("parity.csv")).expect("parity.csv");
    let is_input =
        |c: &str| c.strip_prefix('x').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let n = r.headers().expect("header").iter().filter(|c| is_input(c)).count();
    r.records()
        .map(|rec| rec.expect("row").iter().take(n).map(|f| f.parse().expect("number")).collect())
        .collect()
}

fn tree(name: &str) -> TreeModel {
    TreeModel::open(&fixtures().join(name)).expect("model")
}

fn benches(c: &mut Criterion) {
    for name in ["bearing-xgb", "ai4i-xgb"] {
        let m = tree(name);
        let data = rows(name);
        let flat: Vec<f32> = data.iter().flatten().copied().collect();
        let mut g = c.benchmark_group(format!("trees/{name}/{}-trees", m.ensemble().n_trees()));
        let mut i = 0;
        g.bench_function("predict_row", |b| {
            b.iter(|| {
                i = (i + 1) % data.len();
                black_box(m.ensemble().probability(black_box(&data[i])))
            })
        });
        g.throughput(Throughput::Elements(data.len() as u64));
        g.bench_function("predict_batch_1000", |b| {
            b.iter(|| black_box(m.ensemble().probabilities(black_box(&flat))))
        });
        g.throughput(Throughput::Elements(1));
        g.bench_function("treeshap_row", |b| {
            b.iter(|| {
                i = (i + 1) % data.len();
                black_box(m.ensemble().shap(black_box(&data[i])))
            })
        });
        g.finish();
    }
    let registry = ModelRegistry::new(fixtures());
    let mlp = registry.get("bearing-mlp").expect("mlp");
    let data = rows("bearing-mlp");
    let mut i = 0;
    c.bench_function("tract/bearing-mlp/predict_row", |b| {
        b.iter(|| {
            i = (i + 1) % data.len();
            black_box(mlp.predict_row(black_box(&data[i]), false).expect("score"))
        })
    });
    let flat: Vec<f32> = data.iter().flatten().copied().collect();
    let mut g = c.benchmark_group("tract/bearing-mlp");
    g.throughput(Throughput::Elements(data.len() as u64));
    g.bench_function("predict_batch_1000", |b| {
        b.iter(|| black_box(mlp.predict_rows(black_box(&flat)).expect("scores")))
    });
    g.finish();
}

criterion_group!(models, benches);
criterion_main!(models);
