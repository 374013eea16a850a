//! `docs/crd-reference.md`, rendered from the CRD's OpenAPI schema.
//!
//! One section per object of the schema (`spec`, `spec.walVolume`, …), each
//! a table of its fields: type, whether required, default, description and
//! constraints (enum, bounds, patterns, CEL rules with their messages).
//! Fields of Kubernetes core types (affinity, resources, …) are named, not
//! expanded: the Kubernetes API reference documents them.

use serde_json::Value;

/// Fields whose schema is a Kubernetes core type, with its name.
const CORE_TYPES: &[(&str, &str)] = &[
    ("spec.affinity", "core/v1 Affinity"),
    ("spec.env", "core/v1 EnvVar list"),
    ("spec.resources", "core/v1 ResourceRequirements"),
    ("spec.tolerations", "core/v1 Toleration list"),
    (
        "spec.topologySpreadConstraints",
        "core/v1 TopologySpreadConstraint list",
    ),
    ("status.conditions", "meta/v1 Condition list"),
];

/// The Markdown reference for the CRD in `crd_yaml`.
pub fn render(crd_yaml: &str) -> String {
    let crd: Value = yaml_serde::from_str(crd_yaml).expect("the CRD is YAML");
    let spec = &crd["spec"];
    let version = &spec["versions"][0];
    let mut out = String::new();
    let kind = spec["names"]["kind"].as_str().expect("kind");
    out.push_str(&format!("# {kind} reference\n\n"));
    out.push_str(
        "<!-- Generated from crds/ingester.yaml by operator/tests/docs.rs; do not edit. \
         Regenerate with scripts/gen-docs.sh. -->\n\n",
    );
    let group = spec["group"].as_str().expect("group");
    let v = version["name"].as_str().expect("version");
    let strs = |x: &Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    out.push_str("| | |\n|---|---|\n");
    out.push_str(&format!("| API version | `{group}/{v}` |\n"));
    out.push_str(&format!("| Kind | `{kind}` |\n"));
    out.push_str(&format!(
        "| Scope | {} |\n",
        spec["scope"].as_str().unwrap_or_default()
    ));
    out.push_str(&format!(
        "| Plural, short names | `{}`, {} |\n",
        spec["names"]["plural"].as_str().unwrap_or_default(),
        strs(&spec["names"]["shortNames"])
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(&format!(
        "| Categories | {} |\n",
        strs(&spec["names"]["categories"])
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let subresources: Vec<String> = version["subresources"]
        .as_object()
        .map(|m| m.keys().map(|k| format!("`{k}`")).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "| Subresources | {} |\n\n",
        subresources.join(", ")
    ));

    if let Some(cols) = version["additionalPrinterColumns"].as_array() {
        out.push_str(
            "`kubectl get ingesters` shows:\n\n| Column | From | Meaning |\n|---|---|---|\n",
        );
        for c in cols {
            out.push_str(&format!(
                "| {} | `{}` | {} |\n",
                c["name"].as_str().unwrap_or_default(),
                c["jsonPath"].as_str().unwrap_or_default(),
                cell(c["description"].as_str().unwrap_or("")),
            ));
        }
        out.push('\n');
    }

    let root = &version["schema"]["openAPIV3Schema"];
    if let Some(d) = root["description"].as_str() {
        out.push_str(&format!("{}\n\n", d.trim()));
    }
    let mut sections = Vec::new();
    for top in ["spec", "status"] {
        if !root["properties"][top].is_null() {
            collect(top, &root["properties"][top], &mut sections);
        }
    }
    for (path, schema) in sections {
        section(&mut out, &path, schema);
    }
    for (path, _) in CORE_TYPES {
        assert!(
            out.contains(&format!("`{path}`")) || out.contains(&format!("| `{}` |", leaf(path))),
            "CORE_TYPES names {path}, which the CRD no longer has"
        );
    }
    out
}

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

fn core_type(path: &str) -> Option<&'static str> {
    CORE_TYPES.iter().find(|(p, _)| *p == path).map(|(_, t)| *t)
}

/// The object (or list of objects) at `path`, and every object below it.
/// Lists of objects get `[]` in their path, e.g. `status.pods[]`.
fn collect<'a>(path: &str, schema: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    if core_type(path).is_some() {
        return;
    }
    let (display, obj) = if schema["items"]["properties"].is_object() {
        (format!("{path}[]"), &schema["items"])
    } else if schema["properties"].is_object() {
        (path.to_string(), schema)
    } else {
        return;
    };
    out.push((display.clone(), obj));
    for (name, sub) in obj["properties"].as_object().into_iter().flatten() {
        collect(&format!("{display}.{name}"), sub, out);
    }
}

fn section(out: &mut String, path: &str, obj: &Value) {
    out.push_str(&format!("## `{path}`\n\n"));
    if let Some(d) = obj["description"].as_str() {
        out.push_str(&format!("{}\n\n", d.trim()));
    }
    let required: Vec<&str> = obj["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| Field | Type | Required | Default | Description |\n|---|---|---|---|---|\n");
    for (name, f) in obj["properties"].as_object().into_iter().flatten() {
        let fpath = format!("{path}.{name}");
        let ty = type_of(&fpath, f);
        let default = match &f["default"] {
            Value::Null => String::new(),
            d => format!("`{}`", d),
        };
        let mut desc = f["description"].as_str().unwrap_or("").trim().to_string();
        let constraints = constraints(f);
        if !constraints.is_empty() {
            if !desc.is_empty() {
                desc.push_str("<br>");
            }
            desc.push_str(&constraints.join("; "));
        }
        out.push_str(&format!(
            "| `{name}` | {ty} | {} | {default} | {} |\n",
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            cell(&desc)
        ));
    }
    out.push('\n');
    let mut rules = Vec::new();
    if let Some(alts) = obj["oneOf"].as_array() {
        let names: Vec<String> = alts
            .iter()
            .filter_map(|a| a["required"].as_array())
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(" + ")
            })
            .collect();
        rules.push(format!("exactly one of {}", names.join(", ")));
    }
    for r in obj["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        rules.push(format!(
            "{} (rule: `{}`)",
            r["message"].as_str().unwrap_or("validation rule"),
            r["rule"].as_str().unwrap_or_default()
        ));
    }
    if !rules.is_empty() {
        out.push_str("Validation:\n\n");
        for r in rules {
            out.push_str(&format!("- {}\n", r.replace('\n', " ")));
        }
        out.push('\n');
    }
}

fn type_of(path: &str, f: &Value) -> String {
    if let Some(t) = core_type(path) {
        return t.to_string();
    }
    if f["x-kubernetes-int-or-string"] == true {
        return "integer or string".into();
    }
    let base = f["type"].as_str().unwrap_or("any");
    let ty = match base {
        "array" => {
            let item = &f["items"];
            if item["properties"].is_object() {
                format!("list of [object](#{})", anchor(&format!("{path}[]")))
            } else {
                format!("list of {}", item["type"].as_str().unwrap_or("any"))
            }
        }
        "object" if f["properties"].is_object() => format!("[object](#{})", anchor(path)),
        "object" => match f["additionalProperties"]["type"].as_str() {
            Some(t) => format!("map of {t}"),
            None => "object".into(),
        },
        t => match f["format"].as_str() {
            Some(fmt) => format!("{t} ({fmt})"),
            None => t.to_string(),
        },
    };
    if f["nullable"] == true {
        format!("{ty}, nullable")
    } else {
        ty
    }
}

/// GitHub's heading anchor for `` ## `path` ``.
fn anchor(path: &str) -> String {
    path.chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn constraints(f: &Value) -> Vec<String> {
    let mut c = Vec::new();
    let num = |v: &Value| -> String {
        match v.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            _ => v.to_string(),
        }
    };
    if let Some(e) = f["enum"].as_array() {
        c.push(format!(
            "one of {}",
            e.iter()
                .map(|v| format!(
                    "`{}`",
                    v.as_str().map_or_else(|| v.to_string(), String::from)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (k, label) in [
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
    ] {
        if !f[k].is_null() {
            c.push(format!("{label} {}", num(&f[k])));
        }
    }
    if let Some(p) = f["pattern"].as_str() {
        c.push(format!("pattern `{p}`"));
    }
    for r in f["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if f["properties"].is_object() {
            continue; // listed under the object's own section
        }
        c.push(format!(
            "{} (rule: `{}`)",
            r["message"].as_str().unwrap_or("validation rule"),
            r["rule"].as_str().unwrap_or_default()
        ));
    }
    c
}

/// Text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace("\n\n", "<br>")
        .replace('\n', " ")
}
