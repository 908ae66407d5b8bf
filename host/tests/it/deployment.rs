//! The deployment files under `infrastructure/` checked by the tools made for them.

use std::process::Command;

/// `infrastructure/edgepm.service` with `ExecStart` pointing at the binary under test (verify
/// checks that the command exists), in a temporary folder.
fn unit() -> (tempfile::TempDir, std::path::PathBuf) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infrastructure/edgepm.service"))
            .expect("infrastructure/edgepm.service");
    assert!(text.contains("ExecStart=/usr/local/bin/edgepm run --config /etc/edgepm/edgepm.toml"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgepm.service");
    std::fs::write(&path, text.replace("/usr/local/bin/edgepm", env!("CARGO_BIN_EXE_edgepm"))).expect("unit");
    (dir, path)
}

fn systemd_analyze(args: &[&str], unit: &std::path::Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze is not installed: scripts/test.sh installs Debian's systemd");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
#[ignore = "needs systemd-analyze: run scripts/test.sh"]
fn the_systemd_unit_verifies_clean_and_is_hardened() {
    let _timing = crate::support::shared();
    let (_dir, unit) = unit();
    let (ok, text) = systemd_analyze(&["verify"], &unit);
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify: {text}");
    let (_, text) = systemd_analyze(&["security", "--offline=yes"], &unit);
    let level = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for edgepm.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.0, "exposure {level} (docs/operations.md reports 1.5): {text}");
}

/// Runs `edgepm validate --config <example> [--offline]` with its folders moved under `root`.
fn validate_example(name: &str, root: &std::path::Path, offline: bool) -> (bool, String) {
    let text =
        std::fs::read_to_string(format!("{}/../infrastructure/config/{name}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("infrastructure/config/{name}: {e}"));
    let moved = text
        .replace("\"/var/lib/edgepm\"", &format!("{:?}", root.join("data")))
        .replace("\"/data\"", &format!("{:?}", root.join("data")))
        .replace("\"/plugins\"", &format!("{:?}", root.join("plugins")))
        .replace("\"/models\"", &format!("{:?}", root.join("models")));
    let config = root.join(name);
    std::fs::write(&config, moved).expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgepm"));
    cmd.args(["validate", "--config"]).arg(&config);
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd.output().expect("edgepm validate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_example_configurations_of_the_three_deployments_validate() {
    let _timing = crate::support::shared();
    let root = tempfile::tempdir().expect("tempdir");
    for name in ["gateway-offline.toml", "gateway-uplink.toml", "fargate.toml"] {
        let (ok, text) = validate_example(name, root.path(), true);
        assert!(ok, "{name}: {text}");
        assert!(text.contains(&format!("{name}: valid")), "{name}: {text}");
    }
    // The offline gateway has no cloud sink: the full check (not --offline) passes too.
    let (ok, text) = validate_example("gateway-offline.toml", root.path(), false);
    assert!(ok && text.contains("no cloud sink configured"), "{text}");
    // A typo is refused (unknown keys are errors).
    let bad = root.path().join("bad.toml");
    std::fs::write(
        &bad,
        "data_dir = \"x\"\n[mqtt]\nurl = \"mqtt://h\"\n[sinks.sns]\ntopic = \"arn:aws:sns:x\"\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["validate", "--offline", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("unknown field `topic`"),
        "{out:?}"
    );
    // So is a broker address left as a placeholder.
    std::fs::write(
        &bad,
        "data_dir = \"x\"\n[mqtt]\nurl = \"mqtts://<prefix>-ats.iot.<region>.amazonaws.com\"\n",
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_edgepm"))
        .args(["validate", "--offline", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("MQTT url"), "{out:?}");
}

// ------------------------------------------------------------------ the container and the stack

/// A file of the repository.
fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A linter from the virtualenv scripts/test.sh installs (scripts/lib/lint-requirements.txt).
fn lint_tool(name: &str) -> Command {
    let venv = std::env::var_os("EDGEPM_LINT_VENV")
        .expect("EDGEPM_LINT_VENV is not set: scripts/test.sh installs the linters and sets it");
    let mut cmd = Command::new(std::path::Path::new(&venv).join("bin").join(name));
    // checkov: no download of its rule mappings (no network beyond loopback in tests).
    cmd.env("BC_SKIP_MAPPING", "TRUE");
    cmd
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// checkov on one file: it must have run checks, and none may fail.
fn checkov(file: &std::path::Path, framework: &str) {
    let (ok, text) = output(
        lint_tool("checkov")
            .args(["--skip-download", "--compact", "--quiet", "--framework", framework, "-f"])
            .arg(file),
    );
    let passed = text
        .lines()
        .find_map(|l| l.split("Passed checks: ").nth(1))
        .and_then(|r| r.split(',').next()?.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(ok && passed > 0 && text.contains("Failed checks: 0"), "checkov {}: {text}", file.display());
}

/// The template with its language extensions applied (Fn::ForEach: one host per partition),
/// `Partitions` defaulting to `partitions`: scripts/lib/cfn-expand.py, cfn-lint's transform.
fn expanded_template(partitions: &str) -> (tempfile::TempDir, std::path::PathBuf, serde_json::Value) {
    let text =
        std::fs::read_to_string(repo_file("infrastructure/cloudformation-template.yaml")).expect("template");
    let default = "    Type: CommaDelimitedList\n    Default: acme\n";
    assert!(text.contains(default), "the Partitions parameter changed: update this test");
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = dir.path().join("template.yaml");
    std::fs::write(
        &yaml,
        text.replace(default, &format!("    Type: CommaDelimitedList\n    Default: \"{partitions}\"\n")),
    )
    .expect("template");
    let out = lint_tool("python")
        .arg(repo_file("scripts/lib/cfn-expand.py"))
        .arg(&yaml)
        .output()
        .expect("cfn-expand.py");
    assert!(out.status.success(), "cfn-expand.py: {}", String::from_utf8_lossy(&out.stderr));
    let json = dir.path().join("expanded.json");
    std::fs::write(&json, &out.stdout).expect("expanded");
    let value = serde_json::from_slice(&out.stdout).expect("expanded template is JSON");
    (dir, json, value)
}

#[test]
#[ignore = "needs the linters: run scripts/test.sh"]
fn the_cloudformation_template_lints_clean() {
    let _timing = crate::support::shared();
    let template = repo_file("infrastructure/cloudformation-template.yaml");
    let (ok, text) = output(lint_tool("cfn-lint").arg(&template));
    assert!(ok && text.trim().is_empty(), "cfn-lint: {text}");
    checkov(&template, "cloudformation");
    // checkov does not look inside Fn::ForEach: the hosts' resources are checked expanded.
    let (_dir, json, expanded) = expanded_template("acme,beta");
    for id in ["HostPolicyacme", "TaskDefinitionacme", "Servicebeta", "HostPrivateKeybeta"] {
        assert!(expanded["Resources"].get(id).is_some(), "{id} not in the expansion");
    }
    checkov(&json, "cloudformation");
    // The README's create-stack command reads infrastructure/parameters.example.json: it names
    // parameters of the template only, every one without a default, and values they allow.
    let example: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(repo_file("infrastructure/parameters.example.json")).expect("parameters"),
    )
    .expect("parameters.example.json is JSON");
    let given: std::collections::HashMap<&str, &str> = example
        .iter()
        .map(|p| (p["ParameterKey"].as_str().expect("key"), p["ParameterValue"].as_str().expect("value")))
        .collect();
    let parameters = expanded["Parameters"].as_object().expect("Parameters");
    for (name, value) in &given {
        let p = parameters.get(*name).unwrap_or_else(|| panic!("{name} is not a parameter of the template"));
        if let Some(allowed) = p["AllowedValues"].as_array() {
            assert!(
                allowed
                    .iter()
                    .any(|a| a.as_str() == Some(value) || a.as_i64().is_some_and(|n| value.parse() == Ok(n))),
                "{name}={value}"
            );
        }
        if let Some(pattern) = p["AllowedPattern"].as_str() {
            let re = regex_lite::Regex::new(pattern).expect("pattern");
            assert!(re.is_match(value), "{name}={value} does not match {pattern}");
        }
    }
    for (name, p) in parameters {
        assert!(
            p.get("Default").is_some() || given.contains_key(name.as_str()),
            "{name} has no value in the example"
        );
    }
}

#[test]
#[ignore = "needs the linters: run scripts/test.sh"]
fn the_dockerfile_lints_clean_and_matches_the_task_definition() {
    let _timing = crate::support::shared();
    let dockerfile = repo_file("Dockerfile");
    let (ok, text) = output(lint_tool("hadolint").arg(&dockerfile));
    assert!(ok && text.trim().is_empty(), "hadolint: {text}");
    checkov(&dockerfile, "dockerfile");
    // What the task definition takes for granted of the image.
    let docker = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    let template =
        std::fs::read_to_string(repo_file("infrastructure/cloudformation-template.yaml")).expect("template");
    for (in_image, in_template) in [
        ("USER 10001:10001", "User: \"10001:10001\""),
        ("/usr/local/bin/edgepm", "Command: [CMD, /usr/local/bin/edgepm, healthcheck]"),
        ("/etc/ssl/certs/ca-certificates.crt", "ca_file = \"/etc/ssl/certs/ca-certificates.crt\""),
        ("VOLUME [\"/data\", \"/plugins\", \"/models\"]", "ContainerPath: /plugins, ReadOnly: true"),
        ("ENTRYPOINT [\"edgepm\"]", "Command: [run]"),
    ] {
        assert!(docker.contains(in_image), "the Dockerfile lost {in_image:?}");
        assert!(template.contains(in_template), "the template lost {in_template:?}");
    }
}

/// Just enough of CloudFormation's intrinsic functions to read the expanded template with
/// sample parameters: Ref, Fn::Sub (`${!x}` stays `${x}`), Fn::Join, Fn::If, Fn::GetAtt.
struct Stack<'a> {
    template: &'a serde_json::Value,
    params: std::collections::HashMap<&'a str, String>,
    conditions: std::collections::HashMap<&'a str, bool>,
}

impl Stack<'_> {
    fn resolve(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(m) if m.len() == 1 && m.keys().all(|k| k == "Ref" || k.starts_with("Fn::")) => {
                let (f, arg) = m.iter().next().expect("one key");
                match f.as_str() {
                    "Ref" => self.reference(arg.as_str().expect("Ref name")),
                    "Fn::Sub" => Value::String(self.sub(arg.as_str().expect("Fn::Sub of a string"))),
                    "Fn::Join" => {
                        let sep = arg[0].as_str().expect("Join separator");
                        let parts = self.resolve(&arg[1]);
                        let parts: Vec<&str> = parts
                            .as_array()
                            .expect("Join list")
                            .iter()
                            .map(|p| p.as_str().expect("Join of strings"))
                            .collect();
                        Value::String(parts.join(sep))
                    }
                    "Fn::If" => {
                        let name = arg[0].as_str().expect("condition");
                        let cond = *self.conditions.get(name).unwrap_or_else(|| panic!("condition {name}"));
                        self.resolve(&arg[if cond { 1 } else { 2 }])
                    }
                    "Fn::GetAtt" => {
                        let (id, attr) = match arg {
                            Value::Array(a) => (a[0].as_str().expect("id"), a[1].as_str().expect("attr")),
                            Value::String(s) => s.split_once('.').expect("id.attr"),
                            _ => panic!("GetAtt {arg}"),
                        };
                        Value::String(self.attribute(id, attr))
                    }
                    other => panic!("{other} is not resolved by this test"),
                }
            }
            Value::Object(m) => Value::Object(
                m.iter().map(|(k, v)| (k.clone(), self.resolve(v))).filter(|(_, v)| !v.is_null()).collect(),
            ),
            Value::Array(a) => {
                Value::Array(a.iter().map(|v| self.resolve(v)).filter(|v| !v.is_null()).collect())
            }
            other => other.clone(),
        }
    }

    /// `Ref`: a parameter, a pseudo parameter (`AWS::NoValue` is null, dropped by its parent),
    /// or a resource (its name, or an ARN for a topic).
    fn reference(&self, name: &str) -> serde_json::Value {
        use serde_json::Value;
        match name {
            "AWS::NoValue" => Value::Null,
            "AWS::Partition" => "aws".into(),
            "AWS::Region" => "eu-west-1".into(),
            "AWS::AccountId" => "123456789012".into(),
            "AWS::StackName" => "edgepm".into(),
            _ if self.params.contains_key(name) => self.params[name].clone().into(),
            _ => {
                let resource = self.template["Resources"].get(name).unwrap_or_else(|| panic!("Ref {name}"));
                match resource["Type"].as_str() {
                    Some("AWS::SNS::Topic") => format!("arn:aws:sns:eu-west-1:123456789012:{name}").into(),
                    Some("AWS::SecretsManager::Secret") => {
                        format!("arn:aws:secretsmanager:eu-west-1:123456789012:secret:{name}").into()
                    }
                    _ => name.into(),
                }
            }
        }
    }

    fn attribute(&self, id: &str, attr: &str) -> String {
        let resource = &self.template["Resources"][id];
        match attr {
            "Name" => {
                let name = &resource["Properties"]["TableName"];
                name.as_str().map(str::to_string).unwrap_or_else(|| id.to_string())
            }
            _ => format!("arn:aws:{id}:{attr}"),
        }
    }

    fn sub(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let end = rest[at..].find('}').expect("closing }") + at;
            let inner = &rest[at + 2..end];
            match inner.strip_prefix('!') {
                Some(literal) => out.push_str(&format!("${{{literal}}}")),
                None => match inner.split_once('.') {
                    Some((id, attr)) if !inner.starts_with("AWS::") => {
                        out.push_str(&self.attribute(id, attr))
                    }
                    _ => out.push_str(self.reference(inner).as_str().expect("a string")),
                },
            }
            rest = &rest[end + 1..];
        }
        out + rest
    }
}

/// The stack's parameters' defaults, with `overrides`.
fn stack<'a>(template: &'a serde_json::Value, overrides: &[(&'a str, &str)]) -> Stack<'a> {
    let mut params: std::collections::HashMap<&str, String> = template["Parameters"]
        .as_object()
        .expect("Parameters")
        .iter()
        .map(|(k, p)| {
            let default = match &p["Default"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                number => number.to_string(),
            };
            (k.as_str(), default)
        })
        .collect();
    for (k, v) in overrides {
        params.insert(k, v.to_string());
    }
    let conditions: std::collections::HashMap<&str, bool> = [
        ("UseTimestream", params["Storage"] == "timestream"),
        ("UseInfluxDb", params["Storage"] == "influxdb"),
        ("HasEmail", !params["AlertEmail"].is_empty()),
        ("HasSms", !params["AlertSms"].is_empty()),
        ("HasSes", !params["SesSender"].is_empty()),
        ("HostsRun", params["RunHosts"] == "true"),
    ]
    .into_iter()
    .collect();
    let mut declared: Vec<&str> =
        template["Conditions"].as_object().expect("Conditions").keys().map(String::as_str).collect();
    let mut known: Vec<&str> = conditions.keys().copied().collect();
    declared.sort();
    known.sort();
    assert_eq!(declared, known, "the template's conditions changed: update this test");
    Stack { template, params, conditions }
}

/// A connection to AWS IoT Core, as a policy sees it.
struct Thing<'a> {
    name: &'a str,
    attributes: &'a [(&'a str, &'a str)],
    attached: bool,
}

/// IoT Core's policy evaluation for the features the template uses: Allow statements, actions,
/// resources with thing policy variables (an attribute the thing lacks makes the resource
/// match nothing) and the `*`/`?` wildcards, the IsAttached condition. Anything else in a policy
/// fails the test rather than being ignored.
fn allowed(policy: &serde_json::Value, thing: &Thing, action: &str, resource: &str) -> bool {
    let list = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => {
                a.iter().map(|s| s.as_str().expect("string").to_string()).collect()
            }
            _ => panic!("{v}"),
        }
    };
    policy["Statement"].as_array().expect("Statement").iter().any(|st| {
        assert_eq!(st["Effect"], "Allow", "only Allow statements are evaluated here");
        let condition_holds = match st.get("Condition") {
            None => true,
            Some(c) => {
                assert_eq!(c.as_object().map(|m| m.len()), Some(1), "{c}");
                assert_eq!(c["Bool"].as_object().map(|m| m.len()), Some(1), "{c}");
                c["Bool"]["iot:Connection.Thing.IsAttached"] == if thing.attached { "true" } else { "false" }
            }
        };
        condition_holds
            && list(&st["Action"]).iter().any(|a| a == action)
            && list(&st["Resource"]).iter().any(|r| substitute(r, thing).is_some_and(|r| glob(&r, resource)))
    })
}

fn substitute(resource: &str, thing: &Thing) -> Option<String> {
    let mut r = resource.replace("${iot:Connection.Thing.ThingName}", thing.name);
    while let Some(at) = r.find("${iot:Connection.Thing.Attributes[") {
        let end = r[at..].find("]}").expect("]}") + at;
        let key = &r[at + "${iot:Connection.Thing.Attributes[".len()..end];
        let value = thing.attributes.iter().find(|(k, _)| *k == key)?.1;
        r.replace_range(at..end + 2, value);
    }
    assert!(!r.contains("${"), "a policy variable this test does not know: {r}");
    Some(r)
}

/// IoT policy wildcards: `*` any run of characters (`/` included), `?` one; MQTT's `+` and `#`
/// are plain characters in a policy.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let mut m = vec![vec![false; s.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        m[i][0] = m[i - 1][0] && p[i - 1] == '*';
        for j in 1..=s.len() {
            m[i][j] = match p[i - 1] {
                '*' => m[i - 1][j] || m[i][j - 1],
                '?' => m[i - 1][j - 1],
                c => m[i - 1][j - 1] && c == s[j - 1],
            };
        }
    }
    m[p.len()][s.len()]
}

#[test]
#[ignore = "needs the linters (cfn-lint's transform): run scripts/test.sh"]
fn iot_policies_let_each_thing_use_its_own_topics_only() {
    let _timing = crate::support::shared();
    let (_dir, _json, template) = expanded_template("acme,beta");
    let stack = stack(&template, &[]);
    let policy = |id: &str| stack.resolve(&template["Resources"][id]["Properties"]["PolicyDocument"]);
    let (device, host) = (policy("DevicePolicy"), policy("HostPolicyacme"));
    let arn = |kind: &str, rest: &str| format!("arn:aws:iot:eu-west-1:123456789012:{kind}/{rest}");
    assert!(glob("a*c?", "ab/xcd") && !glob("a*c?", "abc") && !glob("a+b", "axb"), "the matcher itself");

    // A device: connects as itself, publishes its own telemetry and asset record, nothing else.
    let motor =
        Thing { name: "m-042", attributes: &[("tenant", "acme"), ("device", "m-042")], attached: true };
    assert!(allowed(&device, &motor, "iot:Connect", &arn("client", "m-042")));
    assert!(!allowed(&device, &motor, "iot:Connect", &arn("client", "m-043")), "another device's client id");
    assert!(!allowed(&device, &Thing { attached: false, ..motor }, "iot:Connect", &arn("client", "m-042")));
    for leaf in ["telemetry", "asset"] {
        assert!(allowed(&device, &motor, "iot:Publish", &arn("topic", &format!("edgepm/acme/m-042/{leaf}"))));
    }
    for topic in [
        "edgepm/acme/m-043/telemetry",
        "edgepm/beta/m-042/telemetry",
        "edgepm/acme/m-042/prediction",
        "edgepm/acme/m-042/alert",
        "edgepm/acme/deadletter",
    ] {
        assert!(!allowed(&device, &motor, "iot:Publish", &arn("topic", topic)), "device publishes {topic}");
    }
    for action in ["iot:Subscribe", "iot:Receive"] {
        assert!(!allowed(&device, &motor, action, &arn("topicfilter", "edgepm/acme/+/telemetry")));
        assert!(!allowed(&device, &motor, action, &arn("topic", "edgepm/acme/m-042/prediction")));
    }
    // A thing registered without its tenant and device attributes publishes nothing.
    let bare = Thing { name: "m-042", attributes: &[], attached: true };
    assert!(!allowed(&device, &bare, "iot:Publish", &arn("topic", "edgepm/acme/m-042/telemetry")));
    assert!(!allowed(&device, &bare, "iot:Publish", &arn("topic", "edgepm///telemetry")));

    // The host of acme: connects as its thing (ingest) and <thing>-out (publish), subscribes to
    // exactly the filters edgepm subscribes with for `tenants = ["acme"]` (shared or not),
    // receives acme's readings, publishes acme's predictions, alerts and dead letters.
    let host_thing = Thing { name: "edgepm-host-acme", attributes: &[("tenant", "acme")], attached: true };
    let thing_name = stack.resolve(&template["Resources"]["HostThingacme"]["Properties"]["ThingName"]);
    assert_eq!(thing_name, "edgepm-host-acme");
    for client in ["edgepm-host-acme", "edgepm-host-acme-out"] {
        assert!(allowed(&host, &host_thing, "iot:Connect", &arn("client", client)), "{client}");
    }
    assert!(!allowed(&host, &host_thing, "iot:Connect", &arn("client", "edgepm-host-beta")));
    let mut mqtt = edgepm::ingest::mqtt::MqttConfig::new("mqtts://iot.example:8883");
    mqtt.tenants = vec!["acme".into()];
    for shared in [None, Some(stack.params["SharedGroup"].clone())] {
        mqtt.shared_group = shared;
        for filter in mqtt.telemetry_filters().into_iter().chain(mqtt.asset_filters()) {
            assert!(allowed(&host, &host_thing, "iot:Subscribe", &arn("topicfilter", &filter)), "{filter}");
        }
    }
    for filter in [
        "edgepm/+/+/telemetry",
        "edgepm/beta/+/telemetry",
        "edgepm/#",
        "#",
        "$share/edgepm/edgepm/beta/+/telemetry",
        "$share/other/edgepm/acme/+/telemetry",
    ] {
        assert!(
            !allowed(&host, &host_thing, "iot:Subscribe", &arn("topicfilter", filter)),
            "subscribes {filter}"
        );
    }
    assert!(allowed(&host, &host_thing, "iot:Receive", &arn("topic", "edgepm/acme/m-042/telemetry")));
    assert!(allowed(&host, &host_thing, "iot:Receive", &arn("topic", "edgepm/acme/m-042/asset")));
    assert!(!allowed(&host, &host_thing, "iot:Receive", &arn("topic", "edgepm/beta/m-042/telemetry")));
    for topic in [
        edgepm::topics::device("acme", "m-042", edgepm::topics::PREDICTION),
        edgepm::topics::device("acme", "m-042", edgepm::topics::ALERT),
        edgepm::topics::tenant("acme", edgepm::topics::DEAD_LETTER),
    ] {
        assert!(allowed(&host, &host_thing, "iot:Publish", &arn("topic", &topic)), "{topic}");
        let other = topic.replace("/acme/", "/beta/");
        assert!(!allowed(&host, &host_thing, "iot:Publish", &arn("topic", &other)), "{other}");
    }
    assert!(
        !allowed(&host, &host_thing, "iot:Publish", &arn("topic", "edgepm/acme/m-042/telemetry")),
        "a host cannot forge readings"
    );
    // beta's host has the same rights over beta's topics, none over acme's.
    let beta = policy("HostPolicybeta");
    let beta_thing = Thing { name: "edgepm-host-beta", attributes: &[("tenant", "beta")], attached: true };
    assert!(allowed(&beta, &beta_thing, "iot:Subscribe", &arn("topicfilter", "edgepm/beta/+/telemetry")));
    assert!(!allowed(&beta, &beta_thing, "iot:Subscribe", &arn("topicfilter", "edgepm/acme/+/telemetry")));
}

/// The TOML the task definition of `tenant` hands the host in EDGEPM_CONFIG, for `overrides`.
fn task_config(
    template: &serde_json::Value,
    tenant: &str,
    overrides: &[(&str, &str)],
) -> (String, Vec<String>) {
    let required = [
        ("IoTEndpoint", "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com"),
        ("ImageUri", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/edgepm:0.1.0"),
    ];
    let all: Vec<(&str, &str)> = required.iter().chain(overrides).copied().collect();
    let stack = stack(template, &all);
    let container = stack.resolve(
        &template["Resources"][format!("TaskDefinition{tenant}")]["Properties"]["ContainerDefinitions"][0],
    );
    let env = container["Environment"].as_array().expect("Environment");
    let config = env.iter().find(|e| e["Name"] == "EDGEPM_CONFIG").expect("EDGEPM_CONFIG")["Value"]
        .as_str()
        .expect("TOML")
        .to_string();
    let secrets = container["Secrets"]
        .as_array()
        .expect("Secrets")
        .iter()
        .map(|s| s["Name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(container["Command"], serde_json::json!(["run"]));
    (config, secrets)
}

#[test]
#[ignore = "needs the linters (cfn-lint's transform): run scripts/test.sh"]
fn the_task_definitions_configuration_is_one_the_host_accepts() {
    let _timing = crate::support::shared();
    let (_dir, _json, template) = expanded_template("acme");
    let root = tempfile::tempdir().expect("tempdir");
    /// What, parameters, tables the configuration has, tables it has not.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], &'a [&'a str]);
    let cases: &[Case] = &[
        ("timestream", &[], &["[sinks.timestream]", "[sinks.sns]"], &["[sinks.influxdb]", "[sinks.ses]"]),
        (
            "influxdb and SES",
            &[
                ("Storage", "influxdb"),
                ("InfluxDbUrl", "https://influx.example:8086"),
                ("SesSender", "edgepm <alerts@plant.example>"),
                ("SesIdentity", "plant.example"),
            ],
            &["[sinks.influxdb]", "[sinks.ses]", "[sinks.sns]"],
            &["[sinks.timestream]"],
        ),
    ];
    for (what, overrides, present, absent) in cases {
        let (config, secrets) = task_config(&template, "acme", overrides);
        for p in *present {
            assert!(config.contains(p), "{what}: no {p} in\n{config}");
        }
        for a in *absent {
            assert!(!config.contains(a), "{what}: {a} in\n{config}");
        }
        // The secrets ECS injects are the variables the configuration reads.
        let parsed: toml::Value = toml::from_str(&config).unwrap_or_else(|e| panic!("{what}: {e}\n{config}"));
        assert_eq!(parsed["mqtt"]["tls"]["cert_env"].as_str(), Some("EDGEPM_MQTT_CERT"));
        assert_eq!(parsed["mqtt"]["tls"]["key_env"].as_str(), Some("EDGEPM_MQTT_KEY"));
        assert!(
            secrets.contains(&"EDGEPM_MQTT_CERT".to_string())
                && secrets.contains(&"EDGEPM_MQTT_KEY".to_string())
        );
        assert_eq!(
            secrets.contains(&"INFLUXDB_TOKEN".to_string()),
            config.contains("[sinks.influxdb]"),
            "{what}"
        );
        assert_eq!(parsed["mqtt"]["tenants"], toml::Value::Array(vec!["acme".into()]), "{what}");
        assert_eq!(parsed["mqtt"]["client_id"].as_str(), Some("edgepm-host-acme"));
        assert_eq!(
            parsed["mqtt"]["url"].as_str(),
            Some("mqtts://a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:8883")
        );
        // The host itself accepts it, handed over as ECS does (its folders moved here).
        let moved = config
            .replace("\"/data\"", &format!("{:?}", root.path().join("data")))
            .replace("\"/plugins\"", &format!("{:?}", root.path().join("plugins")))
            .replace("\"/models\"", &format!("{:?}", root.path().join("models")));
        let (ok, text) = output(
            Command::new(env!("CARGO_BIN_EXE_edgepm"))
                .args(["validate", "--offline"])
                .env("EDGEPM_CONFIG", moved),
        );
        assert!(ok && text.contains("$EDGEPM_CONFIG: valid"), "{what}: {text}\n{config}");
    }
}

#[test]
fn the_configuration_comes_from_a_file_or_the_environment_never_both() {
    let _timing = crate::support::shared();
    let root = tempfile::tempdir().expect("tempdir");
    let config = format!("data_dir = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n", root.path().join("data"));
    let file = root.path().join("edgepm.toml");
    std::fs::write(&file, &config).expect("config");
    let edgepm = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgepm"));
        cmd.env_remove("EDGEPM_CONFIG");
        cmd
    };
    let (ok, text) = output(edgepm().args(["validate", "--offline"]).env("EDGEPM_CONFIG", &config));
    assert!(ok && text.contains("$EDGEPM_CONFIG: valid"), "{text}");
    let (ok, text) = output(edgepm().args(["validate", "--offline", "--config"]).arg(&file));
    assert!(ok && text.contains("edgepm.toml: valid"), "{text}");
    for args in [&["validate", "--offline", "--config"][..], &["run", "--config"][..]] {
        let (ok, text) = output(edgepm().args(args).arg(&file).env("EDGEPM_CONFIG", &config));
        assert!(!ok && text.contains("both --config") && text.contains("EDGEPM_CONFIG"), "{args:?}: {text}");
    }
    let (ok, text) = output(edgepm().arg("run"));
    assert!(!ok && text.contains("pass --config <edgepm.toml> or put the TOML in $EDGEPM_CONFIG"), "{text}");
    // An error in the variable's TOML names the variable.
    let (ok, text) = output(edgepm().arg("run").env("EDGEPM_CONFIG", "data_dir = 1\n"));
    assert!(!ok && text.contains("$EDGEPM_CONFIG"), "{text}");
}

#[test]
#[ignore = "needs mosquitto: run scripts/test.sh"]
fn healthcheck_exits_zero_only_for_a_healthy_host() {
    let _timing = crate::support::shared();
    let broker = crate::support::broker::Mosquitto::start();
    let root = tempfile::tempdir().expect("tempdir");
    let data =
        crate::support::broker::data_dir_with_tenant(root.path(), "acme", crate::telemetry::TENANT_TOML);
    let mut host = crate::support::broker::HostProcess::start(root.path(), &data, &broker.url(), "");
    let addr = host.http_addr().to_string();
    let (ok, text) =
        output(Command::new(env!("CARGO_BIN_EXE_edgepm")).args(["healthcheck", "--addr", &addr]));
    assert!(ok && text.contains("/healthz: 200"), "{text}");
    let (ok, text) = output(Command::new(env!("CARGO_BIN_EXE_edgepm")).args([
        "healthcheck",
        "--path",
        "/nope",
        "--addr",
        &addr,
    ]));
    assert!(!ok && text.contains("HTTP 404"), "{text}");
    host.stop();
    // Nothing listens any more: unhealthy, with the reason.
    let (ok, text) =
        output(Command::new(env!("CARGO_BIN_EXE_edgepm")).args(["healthcheck", "--addr", &addr]));
    assert!(!ok && text.contains("connecting"), "{text}");
}

#[test]
fn the_grafana_dashboards_are_generated_alike_and_read_what_the_sinks_write() {
    let _timing = crate::support::shared();
    let out = tempfile::tempdir().expect("tempdir");
    let (ok, text) =
        output(Command::new("python3").arg(repo_file("infrastructure/grafana/generate.py")).arg(out.path()));
    assert!(ok, "generate.py: {text}");
    let mut titles = Vec::new();
    for name in ["timestream", "influxdb"] {
        let committed = std::fs::read_to_string(repo_file(&format!("infrastructure/grafana/{name}.json")))
            .expect("dashboard");
        let generated = std::fs::read_to_string(out.path().join(format!("{name}.json"))).expect("generated");
        assert_eq!(committed, generated, "{name}.json is not what generate.py writes: run it");
        let d: serde_json::Value = serde_json::from_str(&committed).expect("JSON");
        let panels = d["panels"].as_array().expect("panels");
        titles
            .push(panels.iter().map(|p| p["title"].as_str().expect("title").to_string()).collect::<Vec<_>>());
        for p in panels {
            let sql =
                p["targets"][0]["rawQuery"].as_str().or(p["targets"][0]["rawSql"].as_str()).expect("a query");
            // Only what the sinks write: the prediction and features measures and their fields.
            assert!(sql.contains("prediction") || sql.contains("features"), "{name}: {sql}");
            for word in sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.ends_with("_version") {
                    assert!(
                        ["preprocess_version", "score_version", "policy_version"].contains(&word),
                        "{word}"
                    );
                }
            }
        }
    }
    assert_eq!(titles[0], titles[1], "both dashboards show the same panels");
    assert!(titles[0].len() >= 6, "{:?}", titles[0]);
    // The fields the panels read are the ones the sinks write.
    let sinks = std::fs::read_to_string(repo_file("host/src/sinks/influxdb.rs")).expect("influxdb sink")
        + &std::fs::read_to_string(repo_file("host/src/sinks/timestream.rs")).expect("timestream sink");
    for field in [
        "\"probability\"",
        "\"is_failure\"",
        "\"model\"",
        "\"preprocess_version\"",
        "\"score_version\"",
        "\"policy_version\"",
        "\"prediction\"",
        "\"features\"",
    ] {
        assert!(sinks.contains(field), "the sinks no longer write {field}");
    }
    assert!(bearing_features::FEATURE_NAMES.contains(&"vibration_rms"));
}
