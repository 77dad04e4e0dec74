//! `hearth train` end to end on the tiny Llama fixture: a run stopped at a checkpoint and
//! resumed reaches exactly the losses of the uninterrupted run (same data order, dropout
//! masks, optimizer state and schedule); a diverging run stops with a message and keeps its
//! last good checkpoint; the saved adapter works with score, eval and merge.
//! Skipped without a GPU adapter (fails instead with HEARTH_REQUIRE_GPU=1).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hearth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).current_dir(repo()).output().expect("run hearth")
}

fn gpu_available() -> bool {
    hearth_tests::gpu().is_some()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hearth-train-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

const DATA: &str = "tests/fixtures/peft/tiny-llama/data.jsonl";

fn train(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec!["train", "tests/fixtures/tiny-llama", "--data", DATA, "--template", "{prompt}{completion}", "--out", out, "--batch-size", "2", "--r", "4", "--dropout", "0.1", "--schedule", "cosine", "--warmup-steps", "1", "--val-split", "0.25", "--eval-steps", "2"];
    args.extend_from_slice(extra);
    hearth(&args)
}

/// The lines of metrics.jsonl.
fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// (step, loss) of every training line of metrics.jsonl.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    metrics(dir).iter().filter(|v| v.get("loss").is_some()).map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())).collect()
}

/// The steps at which metrics.jsonl logged an evaluation.
fn eval_steps(dir: &Path) -> Vec<u64> {
    metrics(dir).iter().filter(|v| v.get("eval_loss").is_some()).map(|v| v["step"].as_u64().unwrap()).collect()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "hearth failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    if !gpu_available() {
        return;
    }
    let a = tmp("full");
    ok(&train(&a, &["--lr", "5e-3", "--max-steps", "6", "--save-steps", "3", "--save-total-limit", "1"]));
    assert!(!a.join("checkpoint-3").exists() && a.join("checkpoint-6").exists(), "--save-total-limit 1 keeps only the newest");
    // the same run stopped after step 3
    let b = tmp("stopped");
    ok(&train(&b, &["--lr", "5e-3", "--max-steps", "6", "--save-steps", "3"]));
    let c = tmp("resumed");
    let ckpt = b.join("checkpoint-3");
    ok(&train(&c, &["--lr", "5e-3", "--max-steps", "6", "--resume", ckpt.to_str().unwrap()]));
    let full = losses(&a);
    assert_eq!(eval_steps(&a), vec![2, 4, 6], "--eval-steps 2 evaluates every 2nd step");
    let resumed = losses(&c);
    assert_eq!(resumed.iter().map(|x| x.0).collect::<Vec<_>>(), vec![4, 5, 6]);
    for (r, f) in resumed.iter().zip(&full[3..]) {
        assert!((r.1 - f.1).abs() <= 1e-6, "step {}: resumed loss {} vs uninterrupted {}", r.0, r.1, f.1);
    }
    // the adapters at the end agree too
    let wa = std::fs::read(a.join("adapter_model.safetensors")).unwrap();
    let wc = std::fs::read(c.join("adapter_model.safetensors")).unwrap();
    assert!(wa == wc, "the resumed run's adapter differs from the uninterrupted run's");

    // resumed into its own folder, the run logs each step once
    ok(&train(&b, &["--lr", "5e-3", "--max-steps", "6", "--resume", ckpt.to_str().unwrap()]));
    let again = losses(&b);
    assert_eq!(again.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert!(again.iter().zip(&full).all(|(x, y)| (x.1 - y.1).abs() <= 1e-6));

    // a settings change is refused
    let d = tmp("mismatch");
    let out = train(&d, &["--lr", "5e-3", "--max-steps", "6", "--seed", "7", "--resume", ckpt.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("resume with the same data"), "{}", String::from_utf8_lossy(&out.stderr));

    // the adapter works with score, eval and merge
    let adapter = a.to_str().unwrap();
    let score = hearth(&["score", "tests/fixtures/tiny-llama", "--adapter", adapter, "--text", "Hello world, tiny models", "--json"]);
    ok(&score);
    let eval = hearth(&["eval", "tests/fixtures/tiny-llama", "--adapter", adapter, "--data", DATA, "--template", "{prompt}{completion}", "--json"]);
    ok(&eval);
    let merged = tmp("merged");
    ok(&hearth(&["merge", "tests/fixtures/tiny-llama", "--adapter", adapter, "--out", merged.to_str().unwrap()]));
    let score_merged = hearth(&["score", merged.to_str().unwrap(), "--text", "Hello world, tiny models", "--json"]);
    ok(&score_merged);
    let nll = |o: &Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["mean_nll"].as_f64().unwrap();
    assert!((nll(&score) - nll(&score_merged)).abs() < 1e-4, "merged model NLL {} vs base + adapter {}", nll(&score_merged), nll(&score));
    for d in [a, b, c, d, merged] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    if !gpu_available() {
        return;
    }
    let d = tmp("nan");
    let out = train(&d, &["--max-steps", "6", "--lr", "1e30", "--max-grad-norm", "0", "--save-steps", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 1e30 learning rate should diverge");
    assert!(err.contains("training diverged") && err.contains("last good checkpoint"), "{err}");
    assert!(d.join("checkpoint-1").join("adapter_model.safetensors").exists());
    assert!(!d.join("adapter_model.safetensors").exists(), "no final adapter after divergence");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn ctrl_c_writes_a_checkpoint_before_exiting() {
    if !gpu_available() {
        return;
    }
    let d = tmp("interrupt");
    let out = d.to_str().unwrap().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["train", "tests/fixtures/tiny-llama", "--data", DATA, "--template", "{prompt}{completion}", "--out", &out, "--max-steps", "100000", "--lr", "1e-3"])
        .current_dir(repo())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait until training has logged a step, then interrupt it as Ctrl-C would
    let metrics = d.join("metrics.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.lines().count() < 2) {
        assert!(started.elapsed().as_secs() < 120, "no training step within 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: checkpoint written"), "{err}");
    let ckpt = existing(&d);
    assert!(ckpt.join("adapter_model.safetensors").exists() && ckpt.join("optimizer.safetensors").exists(), "{}", ckpt.display());
    let _ = std::fs::remove_dir_all(d);
}

/// The one checkpoint-N folder in `dir`.
fn existing(dir: &Path) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("checkpoint-")).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

#[test]
fn every_run_setting_is_a_flag_and_out_of_range_values_are_refused_by_name() {
    let help = String::from_utf8_lossy(&hearth(&["train", "--help"]).stdout).to_string();
    for s in hearth_core::train::settings::SCHEMA {
        let flag = format!("--{}", s.name.replace('_', "-"));
        assert!(help.contains(&flag), "hearth train --help lacks {flag}");
    }
    // Checked before the model loads: no GPU needed.
    for (flag, value) in [("--dropout", "1"), ("--lr", "0"), ("--warmup-ratio", "2"), ("--max-seq-len", "1")] {
        let out = hearth(&["train", "tests/fixtures/tiny-llama", "--data", DATA, flag, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(err.contains(&format!("setting {}", flag[2..].replace('-', "_"))) && err.contains(&format!("change {flag}")), "{flag}: {err}");
    }
}
