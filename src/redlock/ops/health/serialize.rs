//! `serde::Serialize` for the health report (feature `serde`): the detailed view, written
//! from the same field list as [`HealthReport::to_json_detailed`], so both give the same
//! JSON.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::json::{Fields, Value, View, report_fields};
use super::{HealthReport, NodeHealth};

/// Serializes as [`HealthReport::to_json_detailed`]'s document.
impl Serialize for HealthReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Object("HealthReport", report_fields(self, View::Detailed)).serialize(serializer)
    }
}

/// Serializes as one node of [`HealthReport::to_json_detailed`]'s `nodes`.
impl Serialize for NodeHealth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Object("NodeHealth", self.fields(View::Detailed)).serialize(serializer)
    }
}

struct Object<'a>(&'static str, Fields<'a>);

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = serializer.serialize_struct(self.0, self.1.len())?;
        for (name, value) in &self.1 {
            object.serialize_field(name, value)?;
        }
        object.end()
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_none(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::UInt(n) => serializer.serialize_u64(*n),
            Value::Str(s) => serializer.serialize_str(s),
            Value::Nodes(nodes, view) => serializer.collect_seq(
                nodes
                    .iter()
                    .map(|node| Object("NodeHealth", node.fields(*view))),
            ),
        }
    }
}
