//! A hand-weighted logistic baseline over the bearing features, written as a real ONNX graph
//! (MatMul → Add → Sigmoid) and run by the tract engine like any other model.
//!
//! It is **not trained**: its weights encode the textbook signs of bearing wear (vibration RMS
//! and kurtosis up, heat and current up) so the whole pipeline runs before trained models are
//! deployed. `edgepm model baseline <models-dir>` writes it; tests and benchmarks use it because
//! its output can be computed by hand.

use prost::Message;
use tract_onnx::pb::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// (feature, weight, centre): z = bias + Σ weight·(x − centre), p = σ(z).
pub const BEARING_LOGISTIC: &[(&str, f32, f32)] = &[
    ("vibration_rms", 1.5, 3.0),
    ("vibration_kurtosis", 0.8, 3.5),
    ("temperature_mean", 0.05, 70.0),
    ("current_mean", 0.1, 12.0),
];
pub const BEARING_BIAS: f32 = -1.0;

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        ..Default::default()
    }
}

/// The encoded ONNX model of [`BEARING_LOGISTIC`].
pub fn bearing_logistic_onnx() -> Vec<u8> {
    let n = BEARING_LOGISTIC.len() as i64;
    let weights: Vec<f32> = BEARING_LOGISTIC.iter().map(|(_, w, _)| *w).collect();
    let bias = BEARING_BIAS - BEARING_LOGISTIC.iter().map(|(_, w, c)| w * c).sum::<f32>();
    let graph = GraphProto {
        name: "bearing-logistic".into(),
        node: vec![
            node("MatMul", &["x", "w"], "z0"),
            node("Add", &["z0", "b"], "z"),
            node("Sigmoid", &["z"], "p"),
        ],
        initializer: vec![
            TensorProto {
                name: "w".into(),
                dims: vec![n, 1],
                data_type: DataType::Float as i32,
                float_data: weights,
                ..Default::default()
            },
            TensorProto {
                name: "b".into(),
                dims: vec![1],
                data_type: DataType::Float as i32,
                float_data: vec![bias],
                ..Default::default()
            },
        ],
        input: vec![value_info("x", &[1, n])],
        output: vec![value_info("p", &[1, 1])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "edgepm-tests".into(),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Writes `<models_dir>/<name>/{model.onnx,metadata.json}` and returns the folder.
pub fn write(models_dir: &std::path::Path, name: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = models_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("model.onnx"), bearing_logistic_onnx())?;
    let features: Vec<&str> = BEARING_LOGISTIC.iter().map(|(n, _, _)| *n).collect();
    let meta = serde_json::json!({
        "name": name, "version": "baseline-1", "engine": "onnx", "file": "model.onnx", "features": features,
        "description": "hand-weighted logistic baseline, not trained",
    });
    std::fs::write(dir.join("metadata.json"), serde_json::to_string_pretty(&meta).unwrap_or_default())?;
    Ok(dir)
}
