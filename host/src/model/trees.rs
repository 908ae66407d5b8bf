//! The native tree-ensemble engine: XGBoost models (gradient-boosted trees, and random forests
//! trained with `XGBRFClassifier`) evaluated straight from XGBoost's JSON model file, with exact
//! TreeSHAP over the same trees.
//!
//! Why XGBoost's JSON and not the ONNX export: ONNX's TreeEnsembleClassifier carries no node
//! cover (`nodes_hitrates` is absent for XGBoost), and TreeSHAP needs it. The JSON has everything
//! — children, split feature and threshold, default direction for missing values, leaf values,
//! cover (`sum_hessian`) and the base score — so one file is the single source of truth for both
//! the prediction and its explanation; the ONNX file next to it serves other runtimes.
//!
//! Semantics, as XGBoost's own predictor: a node sends `x` left when `x < threshold` (both f32),
//! a missing value (NaN) follows the node's default direction; the margin is the base margin
//! (`logit(base_score)` for `binary:logistic`) plus the leaf value of every tree; the probability
//! is `sigmoid(margin)`. SHAP values are in margin (log-odds) units and, with the expected value,
//! add up to the margin — XGBoost's `pred_contribs`.

use super::{Metadata, Model, ModelError};
use crate::types::{Contribution, Score};
use serde::Deserialize;
use std::path::Path;

/// One node of a tree. Leaves have `left == LEAF` and their value in `value`.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Split threshold, or the leaf value.
    value: f32,
    feature: u32,
    left: u32,
    right: u32,
    default_left: bool,
}

const LEAF: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    /// Cover (sum of hessians) per node.
    cover: Vec<f32>,
    /// Expected value of the tree's output under the training distribution (cover-weighted).
    mean: f64,
    depth: usize,
}

impl Tree {
    #[inline]
    fn leaf(&self, x: &[f32]) -> f32 {
        let mut i = 0usize;
        loop {
            let n = &self.nodes[i];
            if n.left == LEAF {
                return n.value;
            }
            i = next(n, x) as usize;
        }
    }
}

#[inline]
fn next(n: &Node, x: &[f32]) -> u32 {
    let v = x[n.feature as usize];
    if v.is_nan() {
        if n.default_left { n.left } else { n.right }
    } else if v < n.value {
        n.left
    } else {
        n.right
    }
}

/// A tree ensemble with a logistic link.
#[derive(Debug, Clone)]
pub struct TreeEnsemble {
    trees: Vec<Tree>,
    /// The same trees laid out for a branch-free walk, when they are shallow enough.
    perfect: Option<Perfect>,
    base_margin: f64,
    n_features: usize,
}

/// Deepest ensemble walked in the [`Perfect`] layout: 2^8 leaves per tree (3 KB). Deeper trees
/// (random forests grown without a depth limit) keep the node-by-node walk.
const PERFECT_MAX_DEPTH: usize = 8;
/// Trees walked side by side: independent chains of loads the CPU overlaps.
const LANES: usize = 8;

/// Every tree padded to a perfect binary tree of the ensemble's depth `D`: a leaf above the
/// bottom becomes a split whose two subtrees are copies of it, so the walk is exactly `D` steps
/// of `i = 2i + 1 + went_right` with no data-dependent branch (a mispredicted branch per level
/// was most of the cost of the node-by-node walk). Trees are padded to a multiple of [`LANES`]
/// with all-zero trees, which add nothing to the margin.
#[derive(Debug, Clone)]
struct Perfect {
    depth: usize,
    /// `2^D − 1` splits per tree, breadth-first.
    splits: Vec<Split>,
    /// `2^D` leaf values per tree.
    leaves: Vec<f32>,
}

/// A split of the perfect layout: feature index with the default direction in the top bit.
#[derive(Debug, Clone, Copy)]
struct Split {
    threshold: f32,
    feature: u32,
}

const DEFAULT_LEFT: u32 = 1 << 31;

impl Split {
    /// Whether `x` goes right, without a branch: `!(v < t)` is also true for NaN, which then
    /// goes right unless the split's default is left. `MISSING = false` is for rows known to
    /// have no NaN (the common case), and saves the default-direction test.
    #[inline(always)]
    fn right<const MISSING: bool>(self, x: &[f32]) -> usize {
        let v = x[(self.feature & !DEFAULT_LEFT) as usize];
        // NaN is not below any threshold: it goes right unless the split's default is left.
        let below = v < self.threshold;
        if MISSING {
            let missing_left = v.is_nan() & (self.feature & DEFAULT_LEFT != 0);
            (!below & !missing_left) as usize
        } else {
            !below as usize
        }
    }
}

impl Perfect {
    fn build(trees: &[Tree], depth: usize) -> Perfect {
        let inner = (1usize << depth) - 1;
        let padded = trees.len().div_ceil(LANES) * LANES;
        let mut p = Perfect {
            depth,
            splits: vec![Split { threshold: 0.0, feature: 0 }; padded * inner],
            leaves: vec![0.0; padded * (inner + 1)],
        };
        for (t, tree) in trees.iter().enumerate() {
            p.fill(tree, t, 0, 0, 0);
        }
        p
    }

    /// Writes `tree`'s `node` at breadth-first position `pos` of level `level` of tree `t`.
    fn fill(&mut self, tree: &Tree, t: usize, node: usize, pos: usize, level: usize) {
        let inner = (1usize << self.depth) - 1;
        let n = &tree.nodes[node];
        if level == self.depth {
            debug_assert!(n.left == LEAF);
            self.leaves[t * (inner + 1) + pos - inner] = n.value;
            return;
        }
        let (left, right) = if n.left == LEAF {
            // Both ways lead to the same leaf; the split itself is never read for a decision
            // that matters (feature 0 exists in every model that has a split at all).
            (node, node)
        } else {
            let dl = if n.default_left { DEFAULT_LEFT } else { 0 };
            self.splits[t * inner + pos] = Split { threshold: n.value, feature: n.feature | dl };
            (n.left as usize, n.right as usize)
        };
        self.fill(tree, t, left, 2 * pos + 1, level + 1);
        self.fill(tree, t, right, 2 * pos + 2, level + 1);
    }

    /// Sum of the leaf values of all trees for one row.
    fn margin(&self, x: &[f32]) -> f64 {
        if x.iter().any(|v| v.is_nan()) { self.sum::<true>(x) } else { self.sum::<false>(x) }
    }

    fn sum<const MISSING: bool>(&self, x: &[f32]) -> f64 {
        let mut m = 0.0;
        for first in (0..self.n_padded()).step_by(LANES) {
            m += self.lanes::<MISSING>(first, x);
        }
        m
    }

    /// Sum of the leaf values of `LANES` trees starting at tree `first`, in tree order.
    #[inline(always)]
    fn lanes<const MISSING: bool>(&self, first: usize, x: &[f32]) -> f64 {
        let inner = (1usize << self.depth) - 1;
        let splits = &self.splits[first * inner..(first + LANES) * inner];
        let mut at = [0usize; LANES];
        for _ in 0..self.depth {
            for (l, i) in at.iter_mut().enumerate() {
                *i = 2 * *i + 1 + splits[l * inner + *i].right::<MISSING>(x);
            }
        }
        let leaves = &self.leaves[first * (inner + 1)..(first + LANES) * (inner + 1)];
        let mut sum = 0.0;
        for (l, i) in at.iter().enumerate() {
            sum += leaves[l * (inner + 1) + i - inner] as f64;
        }
        sum
    }

    /// Adds the leaf values of every tree to `margins` for `LANES` rows (`xs`, `n` values per
    /// row) walked side by side, tree by tree, so each tree's nodes are read once per `LANES` rows.
    fn rows<const MISSING: bool>(&self, xs: &[f32], n: usize, margins: &mut [f64]) {
        let inner = (1usize << self.depth) - 1;
        for (splits, leaves) in self.splits.chunks_exact(inner).zip(self.leaves.chunks_exact(inner + 1)) {
            let mut at = [0usize; LANES];
            for _ in 0..self.depth {
                for (l, i) in at.iter_mut().enumerate() {
                    *i = 2 * *i + 1 + splits[*i].right::<MISSING>(&xs[l * n..]);
                }
            }
            for (m, i) in margins.iter_mut().zip(at) {
                *m += leaves[i - inner] as f64;
            }
        }
    }

    fn n_padded(&self) -> usize {
        self.leaves.len() >> self.depth
    }
}

// --- XGBoost JSON (the fields used) ----------------------------------------------------------

#[derive(Deserialize)]
struct XgbModel {
    learner: XgbLearner,
}

#[derive(Deserialize)]
struct XgbLearner {
    gradient_booster: XgbBooster,
    learner_model_param: XgbModelParam,
    objective: XgbObjective,
}

#[derive(Deserialize)]
struct XgbBooster {
    name: String,
    #[serde(default)]
    model: Option<XgbGbtree>,
}

#[derive(Deserialize)]
struct XgbGbtree {
    trees: Vec<XgbTree>,
    #[serde(default)]
    tree_info: Vec<i64>,
}

#[derive(Deserialize)]
struct XgbModelParam {
    base_score: String,
    #[serde(default)]
    num_feature: Option<String>,
    #[serde(default)]
    num_class: Option<String>,
}

#[derive(Deserialize)]
struct XgbObjective {
    name: String,
}

#[derive(Deserialize)]
struct XgbTree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f32>,
    default_left: Vec<IntOrBool>,
    sum_hessian: Vec<f32>,
    #[serde(default)]
    split_type: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrBool {
    Int(i64),
    Bool(bool),
}

impl IntOrBool {
    fn get(&self) -> bool {
        match self {
            IntOrBool::Int(i) => *i != 0,
            IntOrBool::Bool(b) => *b,
        }
    }
}

/// XGBoost writes `base_score` as `"5E-1"` (older) or `"[5E-1]"` (3.x).
fn parse_base_score(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    t.parse::<f64>().map_err(|e| format!("base_score {s:?}: {e}"))
}

impl TreeEnsemble {
    /// Parses an XGBoost JSON model (`Booster.save_model("model.json")`) of a binary
    /// classifier (`binary:logistic`, gbtree; XGBRFClassifier models are gbtree too).
    pub fn from_xgboost_json(text: &str) -> Result<TreeEnsemble, String> {
        let m: XgbModel =
            serde_json::from_str(text).map_err(|e| format!("not an XGBoost JSON model: {e}"))?;
        let l = m.learner;
        if l.objective.name != "binary:logistic" {
            return Err(format!("objective {:?} is not supported (binary:logistic only)", l.objective.name));
        }
        if l.gradient_booster.name != "gbtree" {
            return Err(format!("booster {:?} is not supported (gbtree only)", l.gradient_booster.name));
        }
        if l.learner_model_param.num_class.as_deref().is_some_and(|c| c != "0" && c != "1") {
            return Err("multi-class models are not supported".into());
        }
        let gbtree = l.gradient_booster.model.ok_or("the model has no trees")?;
        if gbtree.tree_info.iter().any(|&g| g != 0) {
            return Err("models with several output groups are not supported".into());
        }
        let p = parse_base_score(&l.learner_model_param.base_score)?;
        if !(p > 0.0 && p < 1.0) {
            return Err(format!("base_score {p} is not a probability"));
        }
        let base_margin = (p / (1.0 - p)).ln();
        let mut n_features =
            l.learner_model_param.num_feature.as_deref().and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut trees = Vec::with_capacity(gbtree.trees.len());
        for (t, xt) in gbtree.trees.iter().enumerate() {
            let tree = convert(xt).map_err(|e| format!("tree {t}: {e}"))?;
            n_features = n_features.max(
                tree.nodes
                    .iter()
                    .filter(|n| n.left != LEAF)
                    .map(|n| n.feature as usize + 1)
                    .max()
                    .unwrap_or(0),
            );
            trees.push(tree);
        }
        if trees.is_empty() {
            return Err("the model has no trees".into());
        }
        let depth = trees.iter().map(|t| t.depth).max().unwrap_or(0);
        // A model whose trees are all single leaves has no feature to index: walk it node by node.
        // (The top bit of a split's feature index holds its default direction; an ensemble of
        // single leaves has nothing to walk.)
        let fits = n_features > 0 && n_features < DEFAULT_LEFT as usize;
        let perfect =
            ((1..=PERFECT_MAX_DEPTH).contains(&depth) && fits).then(|| Perfect::build(&trees, depth));
        Ok(TreeEnsemble { trees, perfect, base_margin, n_features })
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Features the trees index (the model's input width).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// The margin (log-odds) of one row. `x` holds at least [`TreeEnsemble::n_features`] values.
    pub fn margin(&self, x: &[f32]) -> f64 {
        let mut m = self.base_margin;
        match &self.perfect {
            Some(p) => m += p.margin(x),
            None => {
                for t in &self.trees {
                    m += t.leaf(x) as f64;
                }
            }
        }
        m
    }

    /// P(class 1) of one row.
    pub fn probability(&self, x: &[f32]) -> f64 {
        sigmoid(self.margin(x))
    }

    /// Probabilities of many rows (`rows` is row-major, `n_features` per row), tree by tree so
    /// each tree's nodes stay in cache across rows.
    pub fn probabilities(&self, rows: &[f32]) -> Vec<f64> {
        let n = self.n_features.max(1);
        let mut margins = vec![self.base_margin; rows.len() / n];
        match &self.perfect {
            Some(p) => {
                let mut chunks = rows.chunks_exact(n * LANES);
                let mut out = margins.chunks_exact_mut(LANES);
                for (xs, ms) in (&mut chunks).zip(&mut out) {
                    if xs.iter().any(|v| v.is_nan()) {
                        p.rows::<true>(xs, n, ms);
                    } else {
                        p.rows::<false>(xs, n, ms);
                    }
                }
                for (m, x) in out.into_remainder().iter_mut().zip(chunks.remainder().chunks_exact(n)) {
                    *m = self.margin(x);
                }
            }
            None => {
                for t in &self.trees {
                    for (m, x) in margins.iter_mut().zip(rows.chunks_exact(n)) {
                        *m += t.leaf(x) as f64;
                    }
                }
            }
        }
        margins.into_iter().map(sigmoid).collect()
    }

    /// SHAP values of one row: `n_features` contributions then the expected value (bias), in
    /// margin units; they add up to [`TreeEnsemble::margin`]. Same layout as XGBoost's
    /// `pred_contribs`.
    pub fn shap(&self, x: &[f32]) -> Vec<f64> {
        let mut phi = vec![0.0; self.n_features + 1];
        phi[self.n_features] = self.base_margin;
        let mut path = Vec::new();
        for t in &self.trees {
            phi[self.n_features] += t.mean;
            if t.nodes[0].left == LEAF {
                continue;
            }
            let d = t.depth + 2;
            path.clear();
            path.resize(d * (d + 1) / 2, PathElement::default());
            tree_shap(t, x, &mut phi, 0, 0, &mut path, 0, 1.0, 1.0, -1);
        }
        phi
    }
}

fn sigmoid(m: f64) -> f64 {
    1.0 / (1.0 + (-m).exp())
}

fn convert(xt: &XgbTree) -> Result<Tree, String> {
    let n = xt.left_children.len();
    let same = [
        xt.right_children.len(),
        xt.split_indices.len(),
        xt.split_conditions.len(),
        xt.default_left.len(),
        xt.sum_hessian.len(),
    ];
    if n == 0 || same.iter().any(|&l| l != n) {
        return Err("node arrays of different lengths".into());
    }
    if xt.split_type.iter().any(|&s| s != 0) {
        return Err("categorical splits are not supported".into());
    }
    let child = |c: i64| -> Result<u32, String> {
        match c {
            -1 => Ok(LEAF),
            c if c > 0 && (c as usize) < n => Ok(c as u32),
            c => Err(format!("child {c} out of range")),
        }
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let (left, right) = (child(xt.left_children[i])?, child(xt.right_children[i])?);
        if (left == LEAF) != (right == LEAF) {
            return Err(format!("node {i} has one child"));
        }
        let feature = u32::try_from(xt.split_indices[i]).map_err(|_| format!("node {i}: bad split index"))?;
        nodes.push(Node {
            value: xt.split_conditions[i],
            feature,
            left,
            right,
            default_left: xt.default_left[i].get(),
        });
    }
    let mut tree = Tree { nodes, cover: xt.sum_hessian.clone(), mean: 0.0, depth: 0 };
    // Children always come after their parent in XGBoost's layout, which also rules out cycles.
    if tree
        .nodes
        .iter()
        .enumerate()
        .any(|(i, n)| n.left != LEAF && (n.left as usize <= i || n.right as usize <= i))
    {
        return Err("children must come after their parent".into());
    }
    let (mean, depth) = mean_and_depth(&tree, 0);
    tree.mean = mean;
    tree.depth = depth;
    Ok(tree)
}

/// Cover-weighted mean leaf value under `node`, and the depth below it.
fn mean_and_depth(t: &Tree, node: usize) -> (f64, usize) {
    let n = &t.nodes[node];
    if n.left == LEAF {
        return (n.value as f64, 0);
    }
    let (l, r) = (n.left as usize, n.right as usize);
    let (ml, dl) = mean_and_depth(t, l);
    let (mr, dr) = mean_and_depth(t, r);
    let (cl, cr) = (t.cover[l] as f64, t.cover[r] as f64);
    let c = t.cover[node] as f64;
    let mean = if c > 0.0 { (ml * cl + mr * cr) / c } else { 0.5 * (ml + mr) };
    (mean, 1 + dl.max(dr))
}

// --- TreeSHAP (Lundberg et al., "Consistent Individualized Feature Attribution for Tree
// Ensembles", Algorithm 2), as XGBoost implements it ------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: i64,
    zero_fraction: f64,
    one_fraction: f64,
    pweight: f64,
}

fn extend_path(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: i64) {
    path[depth] = PathElement {
        feature,
        zero_fraction: zero,
        one_fraction: one,
        pweight: if depth == 0 { 1.0 } else { 0.0 },
    };
    // path[i + 1] += one·w_i·(i+1)/(d+1); path[i] = zero·w_i·(d−i)/(d+1), for i = d−1 … 0. The
    // new path[i] is carried in `upper` to the next step instead of through memory.
    let inv = recip(depth + 1);
    let mut upper = path[depth].pweight;
    for i in (0..depth).rev() {
        let w = path[i].pweight;
        path[i + 1].pweight = upper + one * w * ((i + 1) as f64 * inv);
        upper = zero * w * ((depth - i) as f64 * inv);
    }
    path[0].pweight = upper;
}

/// `1 / k` for the small integers of the path weights: divisions are the slowest instructions
/// of the recursion, and the weights divide by `i + 1`, `depth − i` and `depth + 1` only.
const RECIPROCAL: [f64; 66] = {
    let mut r = [0.0; 66];
    let mut k = 1;
    while k < r.len() {
        r[k] = 1.0 / k as f64;
        k += 1;
    }
    r
};

fn recip(k: usize) -> f64 {
    RECIPROCAL.get(k).copied().unwrap_or_else(|| 1.0 / k as f64)
}

fn unwind_path(path: &mut [PathElement], depth: usize, index: usize) {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let mut next_one = path[depth].pweight;
    let d1 = (depth + 1) as f64;
    let inv_d1 = recip(depth + 1);
    if one != 0.0 {
        let k = d1 / one;
        for i in (0..depth).rev() {
            let tmp = path[i].pweight;
            path[i].pweight = next_one * (k * recip(i + 1));
            next_one = tmp - path[i].pweight * (zero * (depth - i) as f64 * inv_d1);
        }
    } else {
        let k = d1 / zero;
        for i in (0..depth).rev() {
            path[i].pweight *= k * recip(depth - i);
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

fn unwound_path_sum(path: &[PathElement], depth: usize, index: usize) -> f64 {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let mut next_one = path[depth].pweight;
    let d1 = (depth + 1) as f64;
    let mut total = 0.0;
    if one != 0.0 {
        // The loop carries `next_one` from one step to the next: keep the constants off that
        // chain (a multiply and a fused multiply-subtract per step).
        let k = d1 / one;
        let z = zero * recip(depth + 1);
        for i in (0..depth).rev() {
            let tmp = next_one * (k * recip(i + 1));
            total += tmp;
            next_one = path[i].pweight - tmp * (z * (depth - i) as f64);
        }
    } else {
        let k = d1 / zero;
        for i in (0..depth).rev() {
            total += path[i].pweight * k * recip(depth - i);
        }
    }
    total
}

/// `path[parent..]` holds the parent's unique path (depth + 1 elements); this node's path is
/// written right after it.
#[allow(clippy::too_many_arguments, reason = "the recursion of the published algorithm")]
fn tree_shap(
    t: &Tree,
    x: &[f32],
    phi: &mut [f64],
    node: usize,
    mut depth: usize,
    buf: &mut [PathElement],
    parent: usize,
    parent_zero: f64,
    parent_one: f64,
    parent_feature: i64,
) {
    let own = parent + depth + 1;
    buf.copy_within(parent..parent + depth + 1, own);
    let path = &mut buf[own..];
    extend_path(path, depth, parent_zero, parent_one, parent_feature);
    let n = &t.nodes[node];
    if n.left == LEAF {
        // For an element the row does not follow (one = 0) the unwound sum is
        // Σ pweight[j]·(d+1)/(zero·(d−j)), so w·(one − zero) = −Σ pweight[j]·(d+1)/(d−j): the same
        // for all such elements of this leaf, computed once.
        let mut cold = None;
        let value = n.value as f64;
        for i in 1..=depth {
            let el = path[i];
            let weight = if el.one_fraction == 0.0 {
                *cold.get_or_insert_with(|| {
                    let d1 = (depth + 1) as f64;
                    -(0..depth).map(|j| path[j].pweight * (d1 * recip(depth - j))).sum::<f64>()
                })
            } else {
                unwound_path_sum(path, depth, i) * (el.one_fraction - el.zero_fraction)
            };
            phi[el.feature as usize] += weight * value;
        }
        return;
    }
    let hot = next(n, x) as usize;
    let cold = if hot == n.left as usize { n.right as usize } else { n.left as usize };
    let w = t.cover[node] as f64;
    let hot_zero = t.cover[hot] as f64 / w;
    let cold_zero = t.cover[cold] as f64 / w;
    let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
    let feature = n.feature as i64;
    if let Some(k) = (0..=depth).find(|&k| path[k].feature == feature) {
        incoming_zero = path[k].zero_fraction;
        incoming_one = path[k].one_fraction;
        unwind_path(path, depth, k);
        depth -= 1;
    }
    tree_shap(t, x, phi, hot, depth + 1, buf, own, hot_zero * incoming_zero, incoming_one, feature);
    tree_shap(t, x, phi, cold, depth + 1, buf, own, cold_zero * incoming_zero, 0.0, feature);
}

// --- The engine behind `predict` ----------------------------------------------------------------

/// A [`TreeEnsemble`] as a [`Model`].
pub struct TreeModel {
    id: String,
    features: Vec<String>,
    ensemble: TreeEnsemble,
}

impl TreeModel {
    /// The tree model in `folder` (its `metadata.json` and the file it names).
    pub fn open(folder: &Path) -> Result<TreeModel, String> {
        let meta = Metadata::read(folder)?;
        TreeModel::load(&folder.join(&meta.file), &meta)
    }

    pub fn load(path: &Path, meta: &Metadata) -> Result<TreeModel, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ensemble =
            TreeEnsemble::from_xgboost_json(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if ensemble.n_features() > meta.features.len() {
            return Err(format!(
                "{}: the trees use {} features, metadata.json names {}",
                path.display(),
                ensemble.n_features(),
                meta.features.len()
            ));
        }
        let mut ensemble = ensemble;
        ensemble.n_features = meta.features.len();
        Ok(TreeModel {
            id: format!("{}@{}", meta.name, meta.version),
            features: meta.features.clone(),
            ensemble,
        })
    }

    pub fn ensemble(&self) -> &TreeEnsemble {
        &self.ensemble
    }
}

impl Model for TreeModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn feature_names(&self) -> &[String] {
        &self.features
    }

    fn predict_row(&self, row: &[f32], explain: bool) -> Result<Score, ModelError> {
        if row.len() != self.features.len() {
            return Err(ModelError::Inference(format!(
                "{} features given, {} expected",
                row.len(),
                self.features.len()
            )));
        }
        let probability = self.ensemble.probability(row) as f32;
        let contributions = if explain {
            let phi = self.ensemble.shap(row);
            self.features
                .iter()
                .zip(&phi)
                .map(|(f, &v)| Contribution { feature: f.clone(), value: v as f32 })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Score { probability, model: self.id.clone(), contributions })
    }

    fn predict_rows(&self, rows: &[f32]) -> Result<Vec<f32>, ModelError> {
        let n = self.features.len();
        if !rows.len().is_multiple_of(n) {
            return Err(ModelError::Inference(format!("{} values are not rows of {n} features", rows.len())));
        }
        Ok(self.ensemble.probabilities(rows).into_iter().map(|p| p as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One stump on feature 0 (x < 0.5 → −1, else +1, missing → right), covers 3 / 1 / 2, plus a
    /// tree on feature 1 with a repeated split, base_score 0.5.
    const MODEL: &str = r#"{"learner": {
        "gradient_booster": {"name": "gbtree", "model": {"tree_info": [0, 0], "trees": [
          {"left_children": [1, -1, -1], "right_children": [2, -1, -1], "split_indices": [0, 0, 0],
           "split_conditions": [0.5, -1.0, 1.0], "default_left": [0, 0, 0], "sum_hessian": [3.0, 1.0, 2.0]},
          {"left_children": [1, 3, -1, -1, -1], "right_children": [2, 4, -1, -1, -1],
           "split_indices": [1, 1, 0, 0, 0], "split_conditions": [2.0, 1.0, 0.5, -0.25, 0.25],
           "default_left": [1, 0, 0, 0, 0], "sum_hessian": [4.0, 3.0, 1.0, 1.0, 2.0]}]}},
        "learner_model_param": {"base_score": "[5E-1]", "num_feature": "2", "num_class": "0"},
        "objective": {"name": "binary:logistic"}}}"#;

    #[test]
    fn walks_trees_like_xgboost() {
        let m = TreeEnsemble::from_xgboost_json(MODEL).expect("model");
        assert_eq!((m.n_trees(), m.n_features()), (2, 2));
        // x0 = 0.2 → −1; x1 = 1.5 → node 1 → x1 ≥ 1 → node 4 → 0.25
        assert!((m.margin(&[0.2, 1.5]) - (-0.75)).abs() < 1e-12);
        // missing x0 → right (+1); missing x1 → default left → node 1 → missing → right → 0.25
        assert!((m.margin(&[f32::NAN, f32::NAN]) - 1.25).abs() < 1e-12);
        // x1 = 2.0 is not < 2.0: right → 0.5 (leaf 2)
        assert!((m.margin(&[0.7, 2.0]) - 1.5).abs() < 1e-12);
        let p = m.probabilities(&[0.2, 1.5, 0.7, 2.0]);
        assert!((p[0] - sigmoid(-0.75)).abs() < 1e-12 && (p[1] - sigmoid(1.5)).abs() < 1e-12);
    }

    #[test]
    fn shap_values_add_up_to_the_margin_and_match_hand_computation() {
        let m = TreeEnsemble::from_xgboost_json(MODEL).expect("model");
        for x in [[0.2f32, 1.5], [0.7, 0.5], [f32::NAN, 3.0], [0.1, f32::NAN]] {
            let phi = m.shap(&x);
            let sum: f64 = phi.iter().sum();
            assert!((sum - m.margin(&x)).abs() < 1e-9, "{x:?}: {phi:?} vs {}", m.margin(&x));
        }
        // Stump alone: E = (−1·1 + 1·2)/3 = 1/3; for x0 = 0.2, φ0 = −1 − 1/3.
        let phi = m.shap(&[0.2, 5.0]);
        // Tree 2 for x1 = 5: leaf 0.5 (node 2); E2 = (E(node1)·3 + 0.5·1)/4 with
        // E(node1) = (−0.25·1 + 0.25·2)/3 = 1/12 → E2 = (0.25 + 0.5)/4 = 0.1875; φ1 = 0.5 − 0.1875.
        assert!((phi[0] - (-4.0 / 3.0)).abs() < 1e-9, "{phi:?}");
        assert!((phi[1] - 0.3125).abs() < 1e-9, "{phi:?}");
        assert!((phi[2] - (1.0 / 3.0 + 0.1875)).abs() < 1e-9, "bias {phi:?}");
    }

    /// The node-by-node walk, the reference for the perfect layout.
    fn walked(m: &TreeEnsemble, x: &[f32]) -> f64 {
        m.base_margin + m.trees.iter().map(|t| t.leaf(x) as f64).sum::<f64>()
    }

    #[test]
    fn the_perfect_layout_walks_like_the_nodes_one_row_or_many() {
        let m = TreeEnsemble::from_xgboost_json(MODEL).expect("model");
        assert!(m.perfect.is_some());
        // 3 × LANES + 3 rows: whole groups of rows and a remainder, values around every
        // threshold, NaN in either feature.
        let grid = [f32::NAN, -1.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0];
        let rows: Vec<[f32; 2]> =
            (0..3 * LANES + 3).map(|i| [grid[i % grid.len()], grid[(i * 7 + 3) % grid.len()]]).collect();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let batch = m.probabilities(&flat);
        for (x, p) in rows.iter().zip(batch) {
            let expected = walked(&m, x);
            assert_eq!(m.margin(x), expected, "{x:?}");
            assert!((p - sigmoid(expected)).abs() < 1e-15, "{x:?}");
        }
    }

    #[test]
    fn trees_deeper_than_the_perfect_layout_are_walked_node_by_node() {
        // A chain of 10 splits on feature 0 (x < k goes left to leaf −k, else deeper), then +1.
        let depth = PERFECT_MAX_DEPTH + 2;
        let (mut left, mut right, mut cond, mut hess) = (vec![], vec![], vec![], vec![]);
        for k in 0..depth {
            let split = 2 * k;
            left.push(split as i64 + 1);
            right.push(split as i64 + 2);
            cond.push(k as f32);
            // leaf at split + 1
            left.push(-1);
            right.push(-1);
            cond.push(-(k as f32));
        }
        left.push(-1);
        right.push(-1);
        cond.push(1.0);
        hess.resize(left.len(), 1.0);
        let n = left.len();
        let tree = serde_json::json!({"left_children": left, "right_children": right,
            "split_indices": vec![0; n], "split_conditions": cond, "default_left": vec![1; n],
            "sum_hessian": hess});
        let model = serde_json::json!({"learner": {
            "gradient_booster": {"name": "gbtree", "model": {"tree_info": [0], "trees": [tree]}},
            "learner_model_param": {"base_score": "5E-1", "num_feature": "1"},
            "objective": {"name": "binary:logistic"}}});
        let m = TreeEnsemble::from_xgboost_json(&model.to_string()).expect("model");
        assert!(m.perfect.is_none());
        assert_eq!(m.margin(&[3.5]), -4.0);
        assert_eq!(m.margin(&[100.0]), 1.0);
        assert_eq!(m.margin(&[f32::NAN]), -0.0);
        let phi = m.shap(&[3.5]);
        assert!((phi.iter().sum::<f64>() - m.margin(&[3.5])).abs() < 1e-9, "{phi:?}");
    }

    #[test]
    fn an_ensemble_of_single_leaves_scores_rows_one_by_one_and_batched() {
        let leaf = serde_json::json!({"left_children": [-1], "right_children": [-1],
            "split_indices": [0], "split_conditions": [0.25], "default_left": [0], "sum_hessian": [1.0]});
        let model = serde_json::json!({"learner": {
            "gradient_booster": {"name": "gbtree", "model": {"tree_info": [0, 0], "trees": [leaf, leaf]}},
            "learner_model_param": {"base_score": "5E-1", "num_feature": "2"},
            "objective": {"name": "binary:logistic"}}});
        let m = TreeEnsemble::from_xgboost_json(&model.to_string()).expect("model");
        assert_eq!(m.margin(&[1.0, 2.0]), 0.5);
        let rows = vec![1.0f32; 2 * (LANES + 1)];
        assert!(m.probabilities(&rows).iter().all(|&p| (p - sigmoid(0.5)).abs() < 1e-15));
    }

    #[test]
    fn rejects_what_it_cannot_evaluate() {
        let bad = MODEL.replace("binary:logistic", "reg:squarederror");
        assert!(TreeEnsemble::from_xgboost_json(&bad).unwrap_err().contains("objective"));
        let bad = MODEL.replace(r#""left_children": [1, -1, -1]"#, r#""left_children": [0, -1, -1]"#);
        assert!(TreeEnsemble::from_xgboost_json(&bad).is_err());
        assert!(TreeEnsemble::from_xgboost_json("{}").is_err());
    }
}
