//! Every ready mapping in `mappings/` rendered against a sample message,
//! asserting the exact request (and report where the mapping has one); and
//! `port-agent check` accepting every file. Also the image's default mapping
//! (`deploy/control_the_payload_config.json`, Port's image default).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{action_run, signed, SECRET};
use port_agent::cli::dry_run;
use port_agent::json_canon::to_raw_string;
use port_agent::mapping::{JqEnv, MappingSet};
use port_agent::outcome::{Disposition, Skip};
use port_agent::settings::RunLogs;
use port_agent::signature::sign;
use serde_json::{json, Value};

fn mappings_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings")
}

struct Rendered {
    method: String,
    url: String,
    /// Headers without the per-request signature pair.
    headers: Vec<(String, String)>,
    body: Value,
    port_calls: Vec<(String, String, Value)>,
}

async fn render(
    file: &str,
    message: Value,
    env: &[(&str, &str)],
    status: u16,
    answer: Value,
) -> Result<Rendered, Disposition> {
    render_at(&mappings_dir().join(file), message, env, status, answer).await
}

async fn render_at(
    path: &Path,
    message: Value,
    env: &[(&str, &str)],
    status: u16,
    answer: Value,
) -> Result<Rendered, Disposition> {
    let body = if answer.is_null() {
        String::new()
    } else {
        answer.to_string()
    };
    render_on(path, "org_1.runs", message, env, status, &body).await
}

/// Render `message` from `topic`; the target answers `status` with the text `body`.
async fn render_on(
    path: &Path,
    topic: &str,
    message: Value,
    env: &[(&str, &str)],
    status: u16,
    body: &str,
) -> Result<Rendered, Disposition> {
    let file = path.display();
    let set = MappingSet::load(path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut config = crate::support::pipeline::config();
    config.report.run_logs = RunLogs::Off;
    config.report.wf_unmatched_fail = false;
    let env = JqEnv::new(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let p = dry_run::pipeline(config, set, env, status, body);
    let delivery = crate::support::pipeline::delivery(topic, message.to_string(), 0);
    let outcome = p.process(&delivery).await;
    assert!(outcome.warnings.is_empty(), "{file}: {:?}", outcome.warnings);
    // No request: why not.
    let request = p.invoker().take().pop().ok_or(outcome.result)?;
    let port_calls = p
        .reporter()
        .take()
        .iter()
        .map(|c| (c.method().to_string(), c.path(), c.body()))
        .collect();
    // The signature covers exactly the bytes sent.
    let ts = &request
        .headers
        .iter()
        .find(|(k, _)| k == "X-Port-Timestamp")
        .unwrap()
        .1;
    let sig = &request
        .headers
        .iter()
        .find(|(k, _)| k == "X-Port-Signature")
        .unwrap()
        .1;
    assert_eq!(sig, &sign(SECRET, ts, &request.body), "{file}: signature");
    Ok(Rendered {
        method: request.method,
        url: request.url,
        headers: request
            .headers
            .into_iter()
            .filter(|(k, _)| k != "X-Port-Timestamp" && k != "X-Port-Signature")
            .collect(),
        body: serde_json::from_str(&request.body).expect("JSON body"),
        port_calls,
    })
}

/// The Port calls of a run that ends with one status PATCH of `body`.
fn patched(run: &str, body: Value) -> Vec<(String, String, Value)> {
    vec![("PATCH".into(), format!("/v1/actions/runs/{run}"), body)]
}

/// [`render`] of `message` signed as Port does; it must send a request.
async fn render_signed(
    file: &str,
    message: Value,
    env: &[(&str, &str)],
    status: u16,
    answer: Value,
) -> Rendered {
    render(file, signed(message, SECRET, 1), env, status, answer)
        .await
        .unwrap()
}

/// The request's method and URL.
fn assert_request(r: &Rendered, method: &str, url: &str) {
    assert_eq!((r.method.as_str(), r.url.as_str()), (method, url));
}

/// The pipeline trigger of `acme/platform/svc-a` on gitlab.example.com.
fn assert_gitlab_trigger(r: &Rendered) {
    assert_request(
        r,
        "POST",
        "https://gitlab.example.com/api/v4/projects/acme%2Fplatform%2Fsvc-a/trigger/pipeline",
    );
    assert_eq!(r.headers, headers(&[("Content-Type", "application/json")]));
}

/// Headers: `Authorization: {auth}` and a JSON content type, no other.
fn assert_auth_json(r: &Rendered, auth: &str) {
    assert_eq!(
        r.headers,
        headers(&[("Authorization", auth), ("Content-Type", "application/json")])
    );
}

/// An action run for `url` invoked with POST, not synchronized.
fn post_run(run: &str, url: &str) -> Value {
    action_run(run, url, "POST", false)
}

/// [`post_run`] with `properties` as the action's inputs.
fn post_run_with(run: &str, url: &str, properties: Value) -> Value {
    with(post_run(run, url), "/payload/properties", properties)
}

/// The run's Port calls are one status PATCH of `body`.
fn assert_patched(r: &Rendered, run: &str, body: Value) {
    assert_eq!(r.port_calls, patched(run, body));
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with(mut message: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    message
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert(key.to_string(), value);
    message
}

/// Port signs GitLab invocations without their `headers` key.
fn signed_gitlab(mut message: Value) -> Value {
    message.as_object_mut().unwrap().remove("headers");
    let sig = sign(SECRET, "1", &to_raw_string(&message));
    message["headers"] = json!({"X-Port-Signature": sig, "X-Port-Timestamp": 1});
    message
}

#[tokio::test]
async fn generic_webhook() {
    let msg = signed(post_run("r_gw1", "http://hooks.internal/port"), SECRET, 1);
    let r = render(
        "generic-webhook.json",
        msg,
        &[("WEBHOOK_TOKEN", "wh-tok")],
        200,
        json!({"id": 17, "url": "https://x/17"}),
    )
    .await
    .unwrap();
    assert_request(&r, "POST", "http://hooks.internal/port");
    assert_eq!(
        r.headers,
        headers(&[
            ("Authorization", "Bearer wh-tok"),
            ("X-Port-Run-Id", "r_gw1"),
            ("Content-Type", "application/json")
        ])
    );
    assert_eq!(
        r.body,
        json!({"action": "deploy_service", "runId": "r_gw1", "entity": "svc-a", "blueprint": "microservice",
               "inputs": {"version": "1.2.3"}, "triggeredBy": "u_1"})
    );
    // Async and 2xx: no status, but the link and external id.
    assert_patched(
        &r,
        "r_gw1",
        json!({"link": "https://x/17", "externalRunId": "17"}),
    );
}

#[tokio::test]
async fn gitlab_pipeline_trigger() {
    let mut msg = post_run("r_gl1", "https://gitlab.example.com/");
    msg["payload"]["action"]["invocationMethod"] = json!({"type": "GITLAB", "agent": true, "synchronized": false,
        "groupName": "acme/platform", "projectName": "svc-a", "defaultRef": "develop", "omitUserInputs": false});
    msg["payload"]["properties"] = json!({"version": "1.2.3", "replicas": 3});
    let env = [
        ("GITLAB_URL", "https://gitlab.example.com/"),
        ("acme_platform_svc-a", "trig-tok"),
    ];
    let r = render(
        "gitlab-pipeline.json",
        signed_gitlab(msg),
        &env,
        201,
        json!({"id": 991, "web_url": "https://gl/p/991"}),
    )
    .await
    .unwrap();
    assert_gitlab_trigger(&r);
    assert_eq!(
        r.body,
        json!({"token": "trig-tok", "ref": "develop",
               "variables": {"version": "1.2.3", "replicas": "3", "PORT_RUN_ID": "r_gl1"}})
    );
    assert_patched(
        &r,
        "r_gl1",
        json!({"link": "https://gl/p/991", "externalRunId": "991"}),
    );
}

#[tokio::test]
async fn github_workflow_dispatch() {
    let msg = post_run("r_gh1", "https://api.github.com/");
    let msg = with(msg, "/payload/entity/properties/repo", json!("acme/svc-a"));
    let msg = with(
        msg,
        "/payload/properties",
        json!({"workflow": "release.yml", "ref": "v1.2.3", "dry_run": true, "replicas": 2}),
    );
    let r = render_signed(
        "github-workflow-dispatch.json",
        msg,
        &[("GITHUB_TOKEN", "gh-tok")],
        204,
        Value::Null,
    )
    .await;
    assert_request(
        &r,
        "POST",
        "https://api.github.com/repos/acme/svc-a/actions/workflows/release.yml/dispatches",
    );
    assert_eq!(
        r.headers,
        headers(&[
            ("Accept", "application/vnd.github+json"),
            ("Authorization", "Bearer gh-tok"),
            ("X-GitHub-Api-Version", "2022-11-28"),
            ("Content-Type", "application/json"),
        ])
    );
    assert_eq!(
        r.body,
        json!({"ref": "v1.2.3", "inputs": {"dry_run": "true", "replicas": "2", "port_run_id": "r_gh1"}})
    );
    assert!(
        r.port_calls.is_empty(),
        "async 204 without a report mapping: nothing to patch"
    );
}

#[tokio::test]
async fn terraform_cloud_run() {
    let mut msg = post_run("r_tf1", "https://app.terraform.io/");
    msg["action"] = json!("terraform_plan");
    msg["payload"]["entity"] = json!({"identifier": "networking", "properties": {"workspace_id": "ws-abc"}});
    msg["payload"]["properties"] = json!({"variables": {"region": "eu-west-1", "count": 2}});
    let env = [("TF_TOKEN", "tf-tok"), ("TF_ORGANIZATION", "acme")];
    let r = render_signed(
        "terraform-cloud-run.json",
        msg,
        &env,
        201,
        json!({"data": {"id": "run-XYZ"}}),
    )
    .await;
    assert_request(&r, "POST", "https://app.terraform.io/api/v2/runs");
    assert_eq!(
        r.headers,
        headers(&[
            ("Authorization", "Bearer tf-tok"),
            ("Content-Type", "application/vnd.api+json")
        ])
    );
    assert_eq!(
        r.body,
        json!({"data": {"type": "runs",
            "attributes": {"message": "Triggered by Port run r_tf1", "plan-only": true, "is-destroy": false,
                           "variables": [{"key": "region", "value": "\"eu-west-1\""}, {"key": "count", "value": "2"}]},
            "relationships": {"workspace": {"data": {"type": "workspaces", "id": "ws-abc"}}}}})
    );
    assert_patched(
        &r,
        "r_tf1",
        json!({"link": "https://app.terraform.io/app/acme/workspaces/networking/runs/run-XYZ", "externalRunId": "run-XYZ"}),
    );
}

#[tokio::test]
async fn jenkins_build_with_parameters() {
    let msg = post_run_with(
        "r_jk1",
        "https://jenkins.internal/job/deploy/buildWithParameters",
        json!({"env": "prod", "version": "1.2.3", "replicas": 2}),
    );
    let env = [
        ("JENKINS_USER", "bot"),
        ("JENKINS_API_TOKEN", "api-tok"),
        ("JENKINS_JOB_TOKEN", "job-tok"),
    ];
    let r = render_signed("jenkins-build-with-parameters.json", msg, &env, 201, Value::Null).await;
    assert_request(&r, "POST", "https://jenkins.internal/job/deploy/buildWithParameters?env=prod&version=1.2.3&replicas=2&PORT_RUN_ID=r_jk1&token=job-tok");
    // base64("bot:api-tok")
    assert_auth_json(&r, "Basic Ym90OmFwaS10b2s=");
    assert_eq!(r.body, json!({}));
}

#[tokio::test]
async fn argo_workflows_submit() {
    let msg = post_run("r_ar1", "https://argo.internal:2746/");
    let msg = with(
        msg,
        "/payload/entity/properties",
        json!({"argo_template": "deploy-template", "namespace": "ci"}),
    );
    let msg = with(
        msg,
        "/payload/properties",
        json!({"image": "svc-a:1.2.3", "replicas": 2}),
    );
    let env = [
        ("ARGO_SERVER_URL", "https://argo.internal:2746"),
        ("ARGO_TOKEN", "argo-tok"),
    ];
    let answer = json!({"metadata": {"name": "svc-a-x7k2", "namespace": "ci"}});
    let r = render_signed("argo-workflows-submit.json", msg, &env, 200, answer).await;
    assert_request(
        &r,
        "POST",
        "https://argo.internal:2746/api/v1/workflows/ci/submit",
    );
    assert_auth_json(&r, "Bearer argo-tok");
    assert_eq!(
        r.body,
        json!({"resourceKind": "WorkflowTemplate", "resourceName": "deploy-template",
               "submitOptions": {"generateName": "svc-a-", "labels": "port-run-id=r_ar1",
                                 "parameters": ["image=svc-a:1.2.3", "replicas=2"]}})
    );
    assert_patched(
        &r,
        "r_ar1",
        json!({"link": "https://argo.internal:2746/workflows/ci/svc-a-x7k2", "externalRunId": "svc-a-x7k2"}),
    );
}

#[tokio::test]
async fn circleci_pipeline() {
    let msg = post_run(
        "r_cc1",
        "https://circleci.com/api/v2/project/gh/acme/svc-a/pipeline",
    );
    let msg = with(
        msg,
        "/payload/entity/properties/project_slug",
        json!("gh/acme/svc-a"),
    );
    let msg = with(
        msg,
        "/payload/properties",
        json!({"branch": "release", "deploy": true}),
    );
    let answer = json!({"id": "p-uuid", "number": 42});
    let r = render_signed(
        "circleci-pipeline.json",
        msg,
        &[("CIRCLE_CI_TOKEN", "cc-tok")],
        201,
        answer,
    )
    .await;
    assert_request(
        &r,
        "POST",
        "https://circleci.com/api/v2/project/gh/acme/svc-a/pipeline",
    );
    assert_eq!(
        r.headers,
        headers(&[("Circle-Token", "cc-tok"), ("Content-Type", "application/json")])
    );
    assert_eq!(
        r.body,
        json!({"branch": "release", "parameters": {"deploy": true, "port_run_id": "r_cc1"}})
    );
    assert_patched(
        &r,
        "r_cc1",
        json!({"link": "https://app.circleci.com/pipelines/gh/acme/svc-a/42", "externalRunId": "p-uuid"}),
    );
}

#[tokio::test]
async fn workflow_node_only() {
    let msg = signed(post_run("wfnr_1", "http://runner.internal/node"), SECRET, 1);
    let r = render("workflow-node-only.json", msg, &[], 200, Value::Null)
        .await
        .unwrap();
    assert_request(&r, "POST", "http://runner.internal/node");
    assert_eq!(
        r.body,
        json!({"node": "wfnr_1",
               "config": {"type": "WEBHOOK", "agent": true, "synchronized": false, "method": "POST", "url": "http://runner.internal/node"},
               "inputs": {"version": "1.2.3"}})
    );
    // An action run is not this mapping's business.
    let msg = signed(post_run("r_1", "http://runner.internal/node"), SECRET, 1);
    let skipped = render("workflow-node-only.json", msg, &[], 200, Value::Null).await;
    assert_eq!(skipped.err(), Some(Disposition::Skipped(Skip::NoMapping)));
}

#[test]
fn check_accepts_every_ready_mapping() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(mappings_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 13, "one test above per file");
    for f in files {
        let out = Command::new(env!("CARGO_BIN_EXE_port-agent"))
            .args(["check", "--mapping"])
            .arg(&f)
            .env_clear()
            .output()
            .expect("run port-agent check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}", f.display());
        assert!(stdout.contains("mapping(s) compiled"), "{stdout}");
    }
}

/// The mapping the image ships at `/app/control_the_payload_config.json`.
fn image_default_mapping() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/control_the_payload_config.json")
}

/// A GITLAB invocation through the image's default (Port's image default,
/// port-labs/port-agent `app/control_the_payload_config.json`): the expected
/// values are worked out by hand from that mapping's text.
#[tokio::test]
async fn image_default_mapping_gitlab() {
    let mut msg = post_run("r_gl2", "");
    msg["payload"]["action"]["invocationMethod"] = json!({"type": "GITLAB", "agent": true, "synchronized": false,
        "groupName": "acme/platform", "projectName": "svc-a", "defaultRef": "develop",
        "omitUserInputs": false, "omitPayload": false});
    msg["payload"]["properties"] = json!({"version": "1.2.3", "replicas": 3, "flags": {"dry": true}});
    // What the mapping sees: for GITLAB the agent removes the whole `headers`
    // key after checking the signature.
    let mut unsigned = msg.clone();
    unsigned.as_object_mut().unwrap().remove("headers");
    let env = [
        ("GITLAB_URL", "https://gitlab.example.com/"),
        // `<group with "/" as "_">_<project>`
        ("acme_platform_svc-a", "trig-tok"),
        ("acme-platform_svc-a", "not-this-one"),
    ];
    let r = render_at(
        &image_default_mapping(),
        signed_gitlab(msg),
        &env,
        201,
        json!({"id": 991, "web_url": "https://gitlab.example.com/acme/platform/svc-a/-/pipelines/991"}),
    )
    .await
    .unwrap();
    // `(env.GITLAB_URL // "https://gitlab.com/") + "api/v4/projects/" + ("group/project" | @uri) + "/trigger/pipeline"`
    assert_gitlab_trigger(&r);
    // ref: no `.payload.properties.ref`, so `defaultRef`; variables: every
    // input as a string; port_payload: the whole message, which for GITLAB
    // has no `headers` key once the signature was checked.
    assert_eq!(
        r.body,
        json!({"ref": "develop", "token": "trig-tok",
               "variables": {"version": "1.2.3", "replicas": "3", "flags": "{\"dry\":true}"},
               "port_payload": unsigned})
    );
    assert_patched(
        &r,
        "r_gl2",
        json!({"link": "https://gitlab.example.com/acme/platform/svc-a/-/pipelines/991", "externalRunId": "991"}),
    );
}

/// The GITLAB entry's fall-backs: gitlab.com without `GITLAB_URL`, `ref` from
/// the inputs, a null token when its variable is missing, and the inputs and
/// payload left out when the invocation method says so.
#[tokio::test]
async fn image_default_mapping_gitlab_fallbacks() {
    let mut msg = post_run("r_gl3", "");
    msg["payload"]["action"]["invocationMethod"] = json!({"type": "GITLAB", "agent": true, "synchronized": false,
        "groupName": "acme", "projectName": "svc-b", "omitUserInputs": true, "omitPayload": true});
    msg["payload"]["properties"] = json!({"ref": "release/1.2"});
    let r = render_at(
        &image_default_mapping(),
        signed_gitlab(msg),
        &[],
        201,
        json!({"id": 7, "web_url": "https://gitlab.com/acme/svc-b/-/pipelines/7"}),
    )
    .await
    .unwrap();
    assert_eq!(
        r.url,
        "https://gitlab.com/api/v4/projects/acme%2Fsvc-b/trigger/pipeline"
    );
    assert_eq!(
        r.body,
        json!({"ref": "release/1.2", "token": null, "variables": {}, "port_payload": {}})
    );
    assert_patched(
        &r,
        "r_gl3",
        json!({"link": "https://gitlab.com/acme/svc-b/-/pipelines/7", "externalRunId": "7"}),
    );
}

/// A WEBHOOK invocation passes over the GITLAB entry to the catch-all:
/// the invocation method's `method` and `url`, the whole message as the body
/// (signature headers removed, the empty `headers` object kept), and the
/// default report of a synchronized run.
#[tokio::test]
async fn image_default_mapping_webhook() {
    let msg = action_run("r_wh1", "http://hooks.internal/deploy", "put", true);
    let mut unsigned = msg.clone();
    let r = render_at(
        &image_default_mapping(),
        signed(msg, SECRET, 1),
        &[("GITLAB_URL", "https://gitlab.example.com/")],
        200,
        json!({"deployed": true}),
    )
    .await
    .unwrap();
    assert_request(&r, "PUT", "http://hooks.internal/deploy");
    assert_eq!(r.headers, headers(&[("Content-Type", "application/json")]));
    unsigned["headers"] = json!({});
    assert_eq!(r.body, unsigned);
    assert_eq!(
        r.port_calls,
        vec![
            (
                "PATCH".to_string(),
                "/v1/actions/runs/r_wh1/response".to_string(),
                json!({"response": {"deployed": true}})
            ),
            (
                "PATCH".to_string(),
                "/v1/actions/runs/r_wh1".to_string(),
                json!({"status": "SUCCESS"})
            ),
        ]
    );
}

#[test]
fn check_accepts_the_image_default_mapping() {
    let out = Command::new(env!("CARGO_BIN_EXE_port-agent"))
        .args(["check", "--mapping"])
        .arg(image_default_mapping())
        .env_clear()
        .output()
        .expect("run port-agent check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("2 mapping(s) compiled"), "{stdout}");
}

/// README ("Known differences", issue 26): `from_entries` reads jq 1.6's
/// spellings (`key`/`value`, `name`, `Key`/`Value`) and not jq 1.7's `k`/`v`:
/// a mapping moved from the Python agent gives what pyjq gave, here jq
/// 1.6's error for a list of `k`/`v` entries.
#[tokio::test]
async fn from_entries_reads_jq_1_6_spellings_only() {
    let path = std::env::temp_dir().join(format!("from-entries-{}.json", std::process::id()));
    let body = json!({
        "entries": r#"[{"key": "b", "value": 2}, {"name": "c", "value": 3}, {"Key": "d", "Value": 4}, {"key": "e"}] | from_entries"#,
        "kv": r#"try ([{"k": "a", "v": 1}] | from_entries) catch ."#,
    });
    std::fs::write(&path, json!([{"enabled": true, "body": body}]).to_string()).unwrap();
    let msg = signed(post_run("r_fe", "http://t.local/x"), SECRET, 1);
    let r = render_at(&path, msg, &[], 200, Value::Null).await.unwrap();
    // Both checked with jq 1.6 (`jq -n '<expression>'`).
    assert_eq!(
        r.body,
        json!({"entries": {"b": 2, "c": 3, "d": 4, "e": null}, "kv": "Cannot use null (null) as object key"})
    );
}

#[tokio::test]
async fn opsgenie_alert() {
    let msg = post_run_with(
        "r_og1",
        "https://api.opsgenie.com/v2/alerts",
        json!({"message": "DB down", "priority": "P1"}),
    );
    let answer = json!({"result": "Request will be processed", "requestId": "req-1"});
    let env = [("OPSGENIE_API_KEY", "og-key")];
    let r = render_signed("opsgenie-alert.json", msg, &env, 202, answer).await;
    assert_request(&r, "POST", "https://api.opsgenie.com/v2/alerts");
    assert_auth_json(&r, "GenieKey og-key");
    // No description: ""; no user e-mail: the user id.
    assert_eq!(
        r.body,
        json!({"message": "DB down", "description": "", "alias": "port-r_og1", "priority": "P1",
               "tags": ["port", "microservice"], "entity": "svc-a", "source": "Port",
               "details": {"port_run_id": "r_og1", "triggered_by": "u_1"}})
    );
    assert_patched(
        &r,
        "r_og1",
        json!({"status": "SUCCESS", "statusLabel": "Alert requested", "externalRunId": "req-1"}),
    );
}

#[tokio::test]
async fn windmill_job() {
    let msg = post_run(
        "r_wm1",
        "https://windmill.example.com/api/w/ops/jobs/run/p/f/ops/deploy",
    );
    let msg = with(
        msg,
        "/payload/properties",
        json!({"workspace": "ops", "file_path": "f/ops/deploy", "job_data": {"service": "svc-a"}}),
    );
    // Windmill answers the queued job's id as plain text.
    let r = render_on(
        &mappings_dir().join("windmill-job.json"),
        "org_1.runs",
        signed(msg, SECRET, 1),
        &[
            ("WINDMILL_URL", "https://windmill.example.com"),
            ("WINDMILL_TOKEN", "wm-tok"),
        ],
        201,
        "0192-uuid",
    )
    .await
    .unwrap();
    assert_request(
        &r,
        "POST",
        "https://windmill.example.com/api/w/ops/jobs/run/p/f/ops/deploy",
    );
    assert_auth_json(&r, "Bearer wm-tok");
    assert_eq!(r.body, json!({"service": "svc-a", "port_run_id": "r_wm1"}));
    assert_patched(
        &r,
        "r_wm1",
        json!({"link": "https://windmill.example.com/run/0192-uuid?workspace=ops",
                   "externalRunId": "0192-uuid", "statusLabel": "Job queued"}),
    );
}

#[tokio::test]
async fn azure_devops_pipeline_run() {
    let mut msg = post_run("r_az1", "https://dev.azure.com/acme/web/_apis/pipelines/7/runs");
    msg["payload"]["entity"]["properties"] =
        json!({"organization": "acme corp", "project": "web", "pipeline_id": 7});
    msg["payload"]["properties"] = json!({"branch": "release", "env": "prod"});
    let answer = json!({"id": 42, "state": "inProgress",
                        "_links": {"web": {"href": "https://dev.azure.com/acme/web/_build/results?buildId=42"}}});
    let r = render_signed(
        "azure-devops-pipeline.json",
        msg,
        &[("AZURE_DEVOPS_PAT", "pat-123")],
        200,
        answer,
    )
    .await;
    assert_request(
        &r,
        "POST",
        "https://dev.azure.com/acme%20corp/web/_apis/pipelines/7/runs?api-version=7.1",
    );
    // base64(":pat-123"), checked with `jq -n '":pat-123" | @base64'`.
    assert_auth_json(&r, "Basic OnBhdC0xMjM=");
    assert_eq!(
        r.body,
        json!({"resources": {"repositories": {"self": {"refName": "refs/heads/release"}}},
               "templateParameters": {"env": "prod", "port_run_id": "r_az1"}})
    );
    assert_patched(
        &r,
        "r_az1",
        json!({"link": "https://dev.azure.com/acme/web/_build/results?buildId=42",
                   "externalRunId": "42", "statusLabel": "inProgress"}),
    );
}

#[tokio::test]
async fn pagerduty_incident() {
    let msg = post_run_with(
        "r_pd1",
        "https://events.pagerduty.com/v2/enqueue",
        json!({"summary": "Checkout is failing", "severity": "critical"}),
    );
    let r = render_signed(
        "pagerduty-incident.json",
        msg,
        &[("PAGERDUTY_ROUTING_KEY", "R0UT1NG")],
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": "port-r_pd1"}),
    )
    .await;
    assert_request(&r, "POST", "https://events.pagerduty.com/v2/enqueue");
    assert_eq!(r.headers, headers(&[("Content-Type", "application/json")]));
    assert_eq!(
        r.body,
        json!({"routing_key": "R0UT1NG", "event_action": "trigger", "dedup_key": "port-r_pd1",
               "payload": {"summary": "Checkout is failing", "source": "svc-a", "severity": "critical",
                           "component": "microservice",
                           "custom_details": {"port_run_id": "r_pd1", "triggered_by": "u_1"}},
               "client": "Port"})
    );
    assert_patched(
        &r,
        "r_pd1",
        json!({"status": "SUCCESS", "statusLabel": "Incident triggered", "externalRunId": "port-r_pd1"}),
    );
}

#[tokio::test]
async fn slack_change_log() {
    let msg = json!({"changelogDestination": {"type": "WEBHOOK", "agent": true, "url": "http://audit.internal/changes"},
                     "action": "UPDATE", "resourceType": "entity",
                     "diff": {"before": {"identifier": "svc-a", "properties": {"tier": 2}},
                              "after": {"identifier": "svc-a", "properties": {"tier": 1}}}});
    let slack = "https://hooks.slack.com/services/T0/B0/xyz";
    let r = render_on(
        &mappings_dir().join("slack-change-log.json"),
        "org_1.change.log",
        msg.clone(),
        &[("SLACK_WEBHOOK_URL", slack)],
        200,
        "ok",
    )
    .await
    .unwrap();
    assert_eq!((r.method.as_str(), r.url.as_str()), ("POST", slack));
    assert_eq!(r.headers, headers(&[("Content-Type", "application/json")]));
    assert_eq!(
        r.body,
        json!({"text": "Port: UPDATE of entity svc-a",
               "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*UPDATE* `svc-a` (entity)"}}]})
    );
    // A change-log event is not a run: nothing is reported to Port.
    assert_eq!(r.port_calls, vec![]);
    // Without SLACK_WEBHOOK_URL, the destination Port gives.
    let r = render_on(
        &mappings_dir().join("slack-change-log.json"),
        "org_1.change.log",
        msg,
        &[],
        200,
        "ok",
    )
    .await
    .unwrap();
    assert_eq!(r.url, "http://audit.internal/changes");
}

/// A file of `mappings/`, a message its mapping selects, the environment it
/// reads, and its target's answer when the call works.
struct Sample {
    file: &'static str,
    topic: &'static str,
    message: Value,
    env: Vec<(&'static str, &'static str)>,
    ok_status: u16,
    ok_body: String,
}

/// One [`Sample`] per file of `mappings/` (the messages and answers of the
/// tests above).
fn samples() -> Vec<Sample> {
    let sample = |file, message, env: &[(&'static str, &'static str)], ok_status, ok_body: Value| Sample {
        file,
        topic: "org_1.runs",
        message,
        env: env.to_vec(),
        ok_status,
        ok_body: if ok_body.is_null() {
            String::new()
        } else {
            ok_body.to_string()
        },
    };
    let mut gitlab = post_run("r_t1", "https://gitlab.example.com/");
    gitlab["payload"]["action"]["invocationMethod"] = json!({"type": "GITLAB", "agent": true,
        "groupName": "acme", "projectName": "svc-a", "omitUserInputs": false});
    let mut azure = post_run("r_t2", "https://dev.azure.com/acme/web/_apis/pipelines/7/runs");
    azure["payload"]["entity"]["properties"] =
        json!({"organization": "acme", "project": "web", "pipeline_id": 7});
    let mut terraform = post_run("r_t3", "https://app.terraform.io/");
    terraform["action"] = json!("terraform_plan");
    terraform["payload"]["entity"] = json!({"identifier": "net", "properties": {"workspace_id": "ws-abc"}});
    let argo = with(
        post_run("r_t4", "https://argo.internal:2746/"),
        "/payload/entity/properties",
        json!({"argo_template": "deploy", "namespace": "ci"}),
    );
    let circleci = with(
        post_run(
            "r_t5",
            "https://circleci.com/api/v2/project/gh/acme/svc-a/pipeline",
        ),
        "/payload/entity/properties/project_slug",
        json!("gh/acme/svc-a"),
    );
    let windmill = post_run_with(
        "r_t6",
        "https://windmill.example.com/api/w/ops/jobs/run/p/f/ops/deploy",
        json!({"workspace": "ops", "file_path": "f/ops/deploy", "job_data": {}}),
    );
    let github = with(
        post_run_with("r_t7", "https://api.github.com/", json!({"workflow": "r.yml"})),
        "/payload/entity/properties/repo",
        json!("acme/svc-a"),
    );
    let mut out = vec![
        sample(
            "argo-workflows-submit.json",
            argo,
            &[("ARGO_SERVER_URL", "https://argo.internal:2746")],
            200,
            json!({"metadata": {"name": "svc-a-x7k2", "namespace": "ci"}}),
        ),
        sample(
            "azure-devops-pipeline.json",
            azure,
            &[("AZURE_DEVOPS_PAT", "pat-123")],
            200,
            json!({"id": 42, "state": "inProgress", "_links": {"web": {"href": "https://dev.azure.com/r/42"}}}),
        ),
        sample(
            "circleci-pipeline.json",
            circleci,
            &[("CIRCLE_CI_TOKEN", "cc-tok")],
            201,
            json!({"id": "p-uuid", "number": 42}),
        ),
        sample(
            "generic-webhook.json",
            post_run("r_t8", "http://hooks.internal/port"),
            &[],
            200,
            json!({"id": 17, "url": "https://x/17"}),
        ),
        sample(
            "github-workflow-dispatch.json",
            github,
            &[("GITHUB_TOKEN", "gh-tok")],
            204,
            Value::Null,
        ),
        sample(
            "gitlab-pipeline.json",
            gitlab,
            &[("acme_svc-a", "trig-tok")],
            201,
            json!({"id": 991, "web_url": "https://gl/p/991"}),
        ),
        sample(
            "jenkins-build-with-parameters.json",
            post_run("r_t9", "https://jenkins.internal/job/deploy/buildWithParameters"),
            &[],
            201,
            Value::Null,
        ),
        sample(
            "opsgenie-alert.json",
            post_run_with(
                "r_t10",
                "https://api.opsgenie.com/v2/alerts",
                json!({"message": "m"}),
            ),
            &[("OPSGENIE_API_KEY", "og-key")],
            202,
            json!({"requestId": "req-1"}),
        ),
        sample(
            "pagerduty-incident.json",
            post_run_with(
                "r_t11",
                "https://events.pagerduty.com/v2/enqueue",
                json!({"summary": "s"}),
            ),
            &[("PAGERDUTY_ROUTING_KEY", "R0UT1NG")],
            202,
            json!({"status": "success", "dedup_key": "port-r_t11"}),
        ),
        sample(
            "slack-change-log.json",
            json!({"changelogDestination": {"type": "WEBHOOK", "agent": true, "url": "http://audit.internal/c"},
            "action": "UPDATE", "resourceType": "entity", "diff": {"after": {"identifier": "svc-a"}}}),
            &[],
            200,
            Value::Null,
        ),
        sample(
            "terraform-cloud-run.json",
            terraform,
            &[("TF_TOKEN", "tf-tok"), ("TF_ORGANIZATION", "acme")],
            201,
            json!({"data": {"id": "run-XYZ"}}),
        ),
        sample(
            "windmill-job.json",
            windmill,
            &[("WINDMILL_URL", "https://windmill.example.com")],
            201,
            Value::Null,
        ),
        sample(
            "workflow-node-only.json",
            post_run("wfnr_t12", "http://runner.internal/node"),
            &[],
            200,
            Value::Null,
        ),
    ];
    out[9].topic = "org_1.change.log";
    // Windmill answers the job id as plain text.
    out[11].ok_body = "0192-uuid".into();
    out
}

/// A report value no one can use: "null", "undefined", empty, or a link
/// with such a piece (`…/pipelines/x/null`).
fn unusable(s: &str) -> bool {
    let t = s.trim();
    t.is_empty()
        || ["null", "undefined"].contains(&t)
        || t.split(['/', '?', '=', '&', '#'])
            .any(|piece| piece == "null" || piece == "undefined")
}

/// Every string in `v`, with its JSON path.
fn strings(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((at.to_string(), s.clone())),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| strings(x, &format!("{at}[{i}]"), out)),
        Value::Object(m) => m.iter().for_each(|(k, x)| strings(x, &format!("{at}.{k}"), out)),
        _ => {}
    }
}

/// Issue 28: every shipped mapping, rendered by the binary with its target
/// answering a success, an error and nothing, reports no value that is
/// "null", "undefined" or "" (the GitLab mapping reported
/// `"externalRunId":"null"` on every error or empty answer).
#[test]
fn no_shipped_mapping_reports_null_undefined_or_empty() {
    let samples = samples();
    let mut files: Vec<String> = std::fs::read_dir(mappings_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        samples.iter().map(|s| s.file.to_string()).collect::<Vec<_>>(),
        "one sample per file"
    );
    let mut bad = Vec::new();
    let mut reports = 0;
    for s in &samples {
        let message = crate::support::cli::temp_file("null-table", s.file, &s.message.to_string());
        let ok_status = s.ok_status.to_string();
        let answers: [(&str, &str); 5] = [
            (&ok_status, &s.ok_body),
            (&ok_status, ""),
            ("500", r#"{"message":"internal error"}"#),
            ("502", ""),
            ("404", "Not Found"),
        ];
        for (status, body) in answers {
            let path = mappings_dir().join(s.file);
            let mut args = vec![
                "render",
                "--format",
                "json",
                "--timestamp",
                "1",
                "--topic",
                s.topic,
            ];
            args.extend(["--mapping", crate::support::cli::arg(&path)]);
            args.extend(["--message", crate::support::cli::arg(&message)]);
            args.extend(["--assume-status", status, "--assume-body", body]);
            let envs: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for e in &envs {
                args.extend(["--env", e]);
            }
            let out = crate::support::cli::run_cli(&args, &[]);
            let text = crate::support::cli::all_output(&out);
            assert!(out.status.success(), "{} {status}: {text}", s.file);
            let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(
                shown["mapping_index"].is_number(),
                "{}: not selected: {text}",
                s.file
            );
            let mut found = Vec::new();
            strings(&shown["report"], "report", &mut found);
            reports += usize::from(!shown["report"].is_null());
            for (at, v) in found.into_iter().filter(|(_, v)| unusable(v)) {
                bad.push(format!("{} answered {status} {body:?}: {at} = {v:?}", s.file));
            }
        }
        let _ = std::fs::remove_file(message);
    }
    assert!(bad.is_empty(), "unusable report values:\n{}", bad.join("\n"));
    assert!(reports >= 40, "the table reaches the reports ({reports})");
}
