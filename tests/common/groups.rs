//! Write groups applied to an engine and to a model, for the power-cut scenarios: every
//! acknowledged group must be present after reopen, the one in flight all or nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use sndv_kv::engine::{Engine, Op};

use super::{del, put};

pub type Model = BTreeMap<Bytes, Option<Bytes>>;

/// One group of writes: (key, Some(value) | None for delete).
pub type Group = Vec<(Bytes, Option<Bytes>)>;

pub fn to_ops(g: &Group) -> Vec<Op<()>> {
    g.iter()
        .map(|(k, v)| match v {
            Some(v) => put(k.clone(), v.clone()),
            None => del(k.clone()),
        })
        .collect()
}

pub fn apply(m: &mut Model, g: &Group) {
    for (k, v) in g {
        m.insert(k.clone(), v.clone());
    }
}

/// Runs groups until one fails; returns (model of acknowledged groups, the failed group).
pub fn run(engine: &Engine, groups: &[Group]) -> (Model, Option<Group>) {
    let mut m = Model::new();
    for g in groups {
        match engine.write(to_ops(g)) {
            Ok(_) => apply(&mut m, g),
            Err(_) => return (m, Some(g.clone())),
        }
    }
    (m, None)
}

pub fn matches(engine: &Engine, m: &Model) -> Result<(), String> {
    for (k, v) in m {
        let got = engine.get(k).map_err(|e| format!("get {k:?}: {e}"))?;
        if got.as_ref().map(|x| &x.data) != v.as_ref() {
            return Err(format!("{k:?}: got {:?}, want {v:?}", got.map(|x| x.data)));
        }
    }
    Ok(())
}

/// Acknowledged state present; the in-flight group all there or not at all.
pub fn check(engine: &Engine, acked: &Model, in_flight: &Option<Group>) -> Result<(), String> {
    match in_flight {
        None => matches(engine, acked),
        Some(g) => {
            let mut with = acked.clone();
            apply(&mut with, g);
            matches(engine, acked).or_else(|e1| {
                matches(engine, &with).map_err(|e2| {
                    format!("neither without ({e1}) nor with ({e2}) the in-flight group")
                })
            })
        }
    }
}
