//! `hearth bench ... --json` on the tiny Llama fixture: each prints one JSON object with the
//! fields bench/gpu.sh and bench/report.py read, with values that follow from the run (the
//! launches and FLOPs counted, not only present). Skipped without a GPU adapter (fails
//! instead with HEARTH_REQUIRE_GPU=1).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).arg("bench").args(args).arg("--json").current_dir(repo()).output().expect("run hearth");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hearth bench {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line expected, got:\n{stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

fn check_adapter(v: &Value) {
    let a = &v["adapter"];
    for key in ["name", "backend", "device_type", "driver"] {
        assert!(a[key].is_string(), "adapter.{key} in {v}");
    }
    assert!(a["gpu_timestamps"].is_boolean());
}

#[test]
fn bench_train_json_counts_the_step() {
    if hearth_tests::gpu().is_none() {
        return;
    }
    let v = bench(&["train", "tests/fixtures/tiny-llama", "--seq-len", "16", "--batch-size", "2", "--steps", "2", "--r", "4"]);
    assert_eq!(v["bench"], "train");
    check_adapter(&v);
    assert!(f(&v, "tokens_per_s") > 0.0);
    let ms = f(&v, "ms_per_step");
    let host = f(&v, "host_ms_per_step");
    assert!(host > 0.0 && host <= ms, "host {host} ms within the step's {ms} ms");
    match v["gpu_ms_per_step"].as_f64() {
        Some(gpu) => assert!(gpu > 0.0 && gpu <= ms * 1.05, "GPU {gpu} ms within the step's {ms} ms"),
        None => assert!(v["gpu_time_note"].is_string(), "says why the GPU time is missing"),
    }
    // The same launches every step: a whole number per step.
    let dispatches = f(&v, "dispatches_per_step");
    assert!(dispatches > 10.0 && dispatches.fract() == 0.0, "{dispatches}");
    // and after the warm-up step nothing new: the pool's buffers, the cached bind groups
    assert_eq!((f(&v, "bind_groups_created_per_step"), f(&v, "buffers_created_per_step")), (0.0, 0.0));
    // Two layers of the tiny model, seven LoRA-adapted linears each, and the head: the
    // matmul FLOPs counted are at least the base forward's 2·tokens·params.
    let kernels = v["kernels"].as_array().unwrap();
    let launches: f64 = kernels.iter().map(|k| f(k, "launches")).sum();
    assert_eq!(launches, dispatches);
    // the model's matmuls: launches outside an op's scope (attention's products on software
    // adapters are listed as attention/…)
    let gflop: f64 = kernels.iter().filter(|k| !k["kernel"].as_str().unwrap().contains('/')).map(|k| f(k, "gflop")).sum();
    assert!((gflop - f(&v, "matmul_gflop_per_step")).abs() < 1e-9);
    assert!(gflop > 0.0);
    assert!(kernels.iter().any(|k| k["kernel"].as_str().unwrap().starts_with("matmul") && f(k, "gflop") > 0.0));
    assert!(f(&v, "matmul_efficiency") > 0.0);
    assert!(f(&v, "peak_gpu_memory_mib") > 0.0);
    assert!(f(&v["reference_matmul"], "gflops") > 0.0);
}

#[test]
fn bench_generate_json_reports_both_phases() {
    if hearth_tests::gpu().is_none() {
        return;
    }
    let v = bench(&["generate", "tests/fixtures/tiny-llama", "--prompt-tokens", "8", "--new-tokens", "3"]);
    assert_eq!(v["bench"], "generate");
    check_adapter(&v);
    assert!(f(&v, "prefill_tokens_per_s") > 0.0 && f(&v, "decode_tokens_per_s") > 0.0);
    let per_token = f(&v, "dispatches_per_token");
    assert!(per_token > 5.0 && per_token.fract() == 0.0, "{per_token}");
    assert!(f(&v, "host_ms_per_token") > 0.0);
    assert_eq!((f(&v, "bind_groups_created_per_token"), f(&v, "buffers_created_per_token")), (0.0, 0.0));
    assert_eq!(f(&v["sampling"], "temperature"), 0.0, "greedy by default: {v}");
    // tokens are picked on the GPU, a token ahead, where it looks them up (tied embeddings,
    // as tiny-llama32's; tiny-llama's stay on the host), greedy or sampled, unless
    // HEARTH_DECODE_AHEAD=0: one launch more a token (the pick) and one picking the token
    // after the last (where the host reads the last logits), nothing created
    assert_eq!(v["decode_ahead"], false, "{v}");
    let args = ["generate", "tests/fixtures/tiny-llama32", "--prompt-tokens", "8", "--new-tokens", "3"];
    let cache = std::env::temp_dir().join(format!("hearth-ahead-{}", std::process::id()));
    let on_host = [("HEARTH_DECODE_AHEAD", "0")];
    for sampled in [&[][..], &["--temperature", "0.7", "--top-k", "20", "--top-p", "0.9"]] {
        let args = [&args[..], sampled].concat();
        let ahead = bench(&args);
        assert_eq!(ahead["decode_ahead"], true, "{ahead}");
        assert!(ahead["host_sampling_ms_per_token"].is_null(), "{ahead}");
        assert_eq!((f(&ahead, "bind_groups_created_per_token"), f(&ahead, "buffers_created_per_token")), (0.0, 0.0));
        let host = bench_with(&args, &on_host, &cache);
        assert_eq!(host["decode_ahead"], false, "{host}");
        let launches = |v: &Value| 3.0 * f(v, "dispatches_per_token");
        assert!((launches(&ahead) - (launches(&host) + 3.0 + 1.0)).abs() < 1e-9, "{ahead}\n{host}");
    }
    // sampled, one sequence and two together (each its own sampler, as serve's requests): the
    // one's tokens sampled on the host here, the batch's picked on the GPU
    let args = ["generate", "tests/fixtures/tiny-llama", "--prompt-tokens", "8", "--new-tokens", "3", "--temperature", "0.8", "--top-p", "0.9", "--batch", "2"];
    let v = bench(&args);
    assert_eq!((f(&v["sampling"], "temperature"), f(&v["sampling"], "top_k")), (0.8f32 as f64, 0.0), "{v}");
    assert!(f(&v, "decode_tokens_per_s") > 0.0 && f(&v["batch"], "decode_tokens_per_s") > 0.0, "{v}");
    assert!(f(&v, "host_sampling_ms_per_token") > 0.0, "{v}");
    assert_eq!(v["batch"]["picked_on_gpu"], true, "{v}");
    assert!(v["batch"]["host_sampling_ms_per_step"].is_null(), "{v}");
    // the batch's rows sampled on the host: one launch fewer a step, the host's time sampling
    let host = bench_with(&args, &on_host, &cache);
    let _ = std::fs::remove_dir_all(&cache);
    assert_eq!(host["batch"]["picked_on_gpu"], false, "{host}");
    assert!(f(&host["batch"], "host_sampling_ms_per_step") > 0.0, "{host}");
    assert_eq!(f(&v["batch"], "dispatches_per_step"), f(&host["batch"], "dispatches_per_step") + 1.0, "{v}\n{host}");
    // greedy sequences together: as sampled ones
    let greedy = bench(&["generate", "tests/fixtures/tiny-llama", "--prompt-tokens", "8", "--new-tokens", "3", "--batch", "2"]);
    assert_eq!(greedy["batch"]["picked_on_gpu"], true, "{greedy}");
    assert_eq!(f(&greedy["batch"], "dispatches_per_step"), f(&v["batch"], "dispatches_per_step"), "{greedy}\n{v}");
}

/// The Q8_0 rows, with the forward and input gradient in f16 tiles where the adapter has
/// shader-f16.
#[test]
fn bench_ops_json_names_each_kernel() {
    let Some(ctx) = hearth_tests::gpu() else { return };
    let v = bench(&["ops", "--quick", "--reps", "1", "--filter", "q8_0"]);
    assert_eq!(v["bench"], "ops");
    check_adapter(&v);
    let rows = v["rows"].as_array().unwrap();
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    let want: &[&str] = match ctx.has_f16() {
        true => &["q8_0 forward", "q8_0 backward_input", "q8_0 f16 tiles forward", "q8_0 f16 tiles backward_input", "q8_0 forward_row"],
        false => &["q8_0 forward", "q8_0 backward_input", "q8_0 forward_row"],
    };
    assert_eq!(ops, want);
    // (every launch run once, untimed, before the timed pass)
    assert!(f(&v, "compile_pass_ms") > 0.0, "{v}");
    for r in rows {
        assert!(f(r, "rate") > 0.0 && f(r, "ms") > 0.0);
        let kernels = r["kernels"].as_array().unwrap();
        let f16_tiles = r["op"].as_str().unwrap().contains("f16 tiles");
        let prefix = if f16_tiles { "matmul_q8_0_f16_tiles:" } else { "matmul_q8_0:" };
        assert!(!kernels.is_empty() && kernels.iter().all(|k| k.as_str().unwrap().starts_with(prefix)), "{r}");
    }
}

/// `--probes`: the f32 forward's three probes as rows of their own beside it, each named with
/// its kernel variant; none without the flag.
#[test]
fn bench_ops_json_times_the_forwards_probes_where_asked() {
    if hearth_tests::gpu().is_none() {
        return;
    }
    let ops = |v: &Value| -> Vec<String> { v["rows"].as_array().unwrap().iter().map(|r| r["op"].as_str().unwrap().to_string()).collect() };
    let v = bench(&["ops", "--quick", "--reps", "1", "--filter", "probe", "--probes"]);
    assert_eq!(ops(&v), ["f32 forward, probe: loads once", "f32 forward, probe: sums only", "f32 forward, probe: sums only, row-major lanes"], "{v}");
    for r in v["rows"].as_array().unwrap() {
        let probe = r["op"].as_str().unwrap().rsplit(": ").next().unwrap();
        assert_eq!(r["kernels"], json!([format!("matmul_tiled:matmul_tiled [128x128, loaded in turn, probe: {probe}]")]), "{r}");
        assert!(f(r, "rate") > 0.0, "{r}");
    }
    assert!(ops(&bench(&["ops", "--quick", "--reps", "1", "--filter", "f32 forward"])).iter().all(|op| !op.contains("probe")));
}

/// The GPU's own peaks that the matmuls' rows are read against: its f32 rate with no memory
/// traffic, a bandwidth and what a launch costs (chained, and apart), each named with its
/// kernel and unit.
#[test]
fn bench_ops_json_times_the_gpus_peaks() {
    if hearth_tests::gpu().is_none() {
        return;
    }
    let v = bench(&["ops", "--quick", "--reps", "1", "--filter", "peak"]);
    let rows = v["rows"].as_array().unwrap();
    let got: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r["op"].as_str().unwrap(), r["kernels"][0].as_str().unwrap(), r["unit"].as_str().unwrap())).collect();
    let launch = ("fma_peak:fma_peak [default]", "k/s");
    assert_eq!(
        got,
        [
            ("peak fma", "fma_peak:fma_peak [default]", "GFLOP/s"),
            ("peak a + b", "residual:residual_forward [default]", "GB/s"),
            ("peak launches, chained", launch.0, launch.1),
            ("peak launches, apart", launch.0, launch.1)
        ],
        "{v}"
    );
    for r in rows {
        assert!(f(r, "rate") > 0.0 && f(r, "ms") > 0.0, "{r}");
    }
    // 64 FLOPs a round of each invocation's chains
    let fma = &rows[0];
    let flop = 64.0 * f(fma, "m") * f(fma, "k");
    assert!((flop / f(fma, "ms") / 1e6 / f(fma, "rate") - 1.0).abs() < 1e-9, "{fma}");
    // thousands of launches a second: one a launch's ms
    for r in &rows[2..] {
        assert!((f(r, "ms") * f(r, "rate") - 1.0).abs() < 1e-9, "{r}");
    }
}

/// HEARTH_ADAPTER=noop: wgpu's backend that runs nothing, shaped like a GPU, so that a bench
/// times the host's side alone (recording, bind groups, submissions): the GPU kernels' paths,
/// the same launches every step as a real GPU would get, no GPU time claimed.
#[test]
fn bench_train_on_the_noop_backend_times_the_host_alone() {
    let v = bench_with(&["train", "tests/fixtures/tiny-llama", "--seq-len", "16", "--batch-size", "2", "--steps", "2", "--r", "4"], &[("HEARTH_ADAPTER", "noop")], &std::env::temp_dir());
    assert_eq!(v["adapter"]["backend"], "Noop", "{v}");
    assert!(v["gpu_ms_per_step"].is_null() && v["gpu_time_note"].is_string(), "{v}");
    assert!(f(&v, "host_ms_per_step") > 0.0 && f(&v, "dispatches_per_step") > 10.0, "{v}");
    // the GPU kernels (flash attention, the workgroup-tiled matmuls), not a software
    // adapter's (attention as matmuls, the register kernels)
    let kernels: Vec<&str> = v["kernels"].as_array().unwrap().iter().map(|k| k["kernel"].as_str().unwrap()).collect();
    assert!(kernels.iter().any(|k| k.starts_with("attention_flash:attention_flash_backward_kv")), "{kernels:?}");
    assert!(kernels.iter().any(|k| k.starts_with("matmul_tiled:matmul_tiled")), "{kernels:?}");
    assert!(!kernels.iter().any(|k| k.starts_with("attention/") || k.starts_with("matmul:")), "{kernels:?}");
    assert_eq!((f(&v, "bind_groups_created_per_step"), f(&v, "buffers_created_per_step")), (0.0, 0.0));
}

/// `hearth <args> --json` with `env`, caches under `cache` (XDG_CACHE_HOME).
fn bench_with(args: &[&str], env: &[(&str, &str)], cache: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth")).arg("bench").args(args).arg("--json").envs(env.iter().copied()).env("XDG_CACHE_HOME", cache).current_dir(repo()).output().expect("run hearth");
    assert!(out.status.success(), "hearth bench {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `bench tiles` times the tiled forwards in both tile sizes, each split and order of loads,
/// and picks the threshold with the least total time, then 16 steps per iteration against 8 in
/// tiles of 128, 64 columns against 128, two tiles in workgroup memory against one, and LoRA's
/// thin products' own split; a kept tuning (HEARTH_TUNE=1 on this
/// CPU adapter, which is otherwise not tuned) decides the tiles of every tiled launch after it.
#[test]
fn the_tile_tuning_is_measured_kept_and_applied() {
    if hearth_tests::gpu().is_none() {
        return;
    }
    let cache = std::env::temp_dir().join(format!("hearth-tiles-{}", std::process::id()));
    let gpu = [("HEARTH_KERNELS", "gpu")];
    // (with the steps, columns and tiles forced for the run: the tuning times its own variants
    // all the same; two tiles of 16 steps, 33 KiB, are past lavapipe's 32 and left out)
    let v = bench_with(&["tiles", "--quick"], &[gpu[0], ("HEARTH_TILE_STEPS", "16"), ("HEARTH_TILE_COLUMNS", "64"), ("HEARTH_TILE_BUFFERS", "2")], &cache);
    assert_eq!((v["bench"].as_str(), v["kept"].as_bool()), (Some("tiles"), Some(false)), "{v}");
    assert!(v["adapter"]["tiles"]["steps"] == 16 && v["adapter"]["tiles"]["columns"] == 64 && v["adapter"]["tiles"]["buffers"] == 1, "{v}");
    // four shapes (the last thin: tiles of 64 × 32) in two formats, few tiles splitting as
    // each of five choices (towards 64, 256 and 1024 workgroups in parts of 256 steps or
    // more, towards 256 in parts of 64 and 1024 in parts of 32) and a sixth, towards the
    // workgroups the GPU was measured to run at once (a multiple of 8) in parts of 64, the
    // values loaded a step ahead and in turn
    let at_once = f(&v, "workgroups_at_once");
    assert!(at_once >= 8.0 && at_once % 8.0 == 0.0, "{v}");
    let timed = v["timed"].as_array().unwrap();
    let choices = if at_once == 256.0 { 5 } else { 6 };
    assert_eq!(timed.len(), 4 * 2 * choices * 2, "{v}");
    assert!(timed.iter().all(|t| f(t, "ms_64") > 0.0 && f(t, "ms_128") > 0.0), "{v}");
    let splits: Vec<(f64, f64)> = timed.iter().map(|t| (f(t, "split_workgroups"), f(t, "split_min_steps"))).collect();
    assert_eq!([splits[0], splits[4], splits[8], splits[12], splits[16]], [(64.0, 256.0), (256.0, 256.0), (1024.0, 256.0), (256.0, 64.0), (1024.0, 32.0)], "{v}");
    assert!(choices == 5 || splits[20] == (at_once, 64.0), "{v}");
    assert_eq!([&timed[0]["prefetch"], &timed[2]["prefetch"]], [true, false], "{v}");
    // a split that splits as the default does has the default's times in the same order of
    // loads; 512 × 512 × 512 in tiles of 64 splits towards 256 (in 2 parts; in 4 of 64 steps),
    // not towards 64, and is timed so
    let ms = |m: f64, split: (f64, f64), ahead: bool, key: &str| {
        timed.iter().find(|t| f(t, "m") == m && (f(t, "split_workgroups"), f(t, "split_min_steps")) == split && t["prefetch"] == ahead).map(|t| f(t, key)).unwrap()
    };
    let default = (64.0, 256.0);
    for ahead in [true, false] {
        for split in [(256.0, 256.0), (256.0, 64.0)] {
            assert!(ms(64.0, split, ahead, "ms_64") == ms(64.0, default, ahead, "ms_64") && ms(512.0, split, ahead, "ms_64") != ms(512.0, default, ahead, "ms_64"), "{split:?}: {v}");
        }
        assert!(ms(512.0, (256.0, 256.0), ahead, "ms_128") == ms(512.0, default, ahead, "ms_128"), "{v}");
    }
    // the threshold: the timed output size (or never) with the least total at the chosen
    // split and order of loads
    let chosen = ((f(&v, "split_workgroups"), f(&v, "split_min_steps")), &v["prefetch"]);
    let at_split: Vec<&Value> = timed.iter().filter(|t| ((f(t, "split_workgroups"), f(t, "split_min_steps")), &t["prefetch"]) == chosen).collect();
    assert_eq!(at_split.len(), 8, "{v}");
    let total = |from: f64| -> f64 { at_split.iter().map(|t| if f(t, "m") * f(t, "n") >= from { f(t, "ms_128") } else { f(t, "ms_64") }).sum() };
    let chosen = v["wide_outputs"].as_f64().unwrap_or(f64::INFINITY);
    assert!(at_split.iter().all(|t| total(chosen) <= total(f(t, "m") * f(t, "n"))) && total(chosen) <= total(f64::INFINITY), "{v}");
    // 16 steps per iteration against 8 at the shapes in tiles of 128 from the threshold (8's
    // time the chosen split's), 16 kept only where they save 3 %
    let wide: Vec<&&Value> = at_split.iter().filter(|t| t["format"] == "f32" && f(t, "m") * f(t, "n") >= chosen).collect();
    let steps = v["steps_timed"].as_array().unwrap();
    assert_eq!(steps.len(), wide.len(), "{v}");
    for (s, t) in steps.iter().zip(&wide) {
        assert!(f(s, "m") == f(t, "m") && f(s, "ms_8") == f(t, "ms_128") && f(s, "ms_16") > 0.0, "{v}");
    }
    let (ms_8, ms_16) = steps.iter().fold((0.0, 0.0), |(a, b), s| (a + f(s, "ms_8"), b + f(s, "ms_16")));
    assert_eq!(f(&v, "steps"), if !steps.is_empty() && ms_16 < 0.97 * ms_8 { 16.0 } else { 8.0 }, "{v}");
    // then 64 columns against 128 at the same shapes (128's time the steps kept's), 64 kept
    // only where they save 3 %
    let columns = v["columns_timed"].as_array().unwrap();
    assert_eq!(columns.len(), wide.len(), "{v}");
    for (c, s) in columns.iter().zip(steps) {
        let kept = if f(&v, "steps") == 16.0 { f(s, "ms_16") } else { f(s, "ms_8") };
        assert!(f(c, "m") == f(s, "m") && f(c, "ms_128") == kept && f(c, "ms_64") > 0.0, "{v}");
    }
    let (ms_128, ms_64) = columns.iter().fold((0.0, 0.0), |(a, b), c| (a + f(c, "ms_128"), b + f(c, "ms_64")));
    assert_eq!(f(&v, "columns"), if !columns.is_empty() && ms_64 < 0.97 * ms_128 { 64.0 } else { 128.0 }, "{v}");
    // then two tiles against one at the same shapes (one's time the columns kept's), where
    // lavapipe's 32 KiB hold them (not at 16 steps), two kept only where they save 3 %
    let buffers = v["buffers_timed"].as_array().unwrap();
    assert_eq!(buffers.len(), if f(&v, "steps") == 16.0 { 0 } else { wide.len() }, "{v}");
    for (b, c) in buffers.iter().zip(columns) {
        let kept = if f(&v, "columns") == 64.0 { f(c, "ms_64") } else { f(c, "ms_128") };
        assert!(f(b, "m") == f(c, "m") && f(b, "ms_1") == kept && f(b, "ms_2") > 0.0, "{v}");
    }
    let (ms_1, ms_2) = buffers.iter().fold((0.0, 0.0), |(a, b), t| (a + f(t, "ms_1"), b + f(t, "ms_2")));
    assert_eq!(f(&v, "buffers"), if !buffers.is_empty() && ms_2 < 0.97 * ms_1 { 2.0 } else { 1.0 }, "{v}");
    // last, the thin shape (128 × 16 × 512, tiles of 64 × 32) split as the others are, then
    // towards 1024 workgroups in parts of 32 and 16 steps, 2048 in 16 and 4096 in 8; another
    // split than the others' kept only where it saves 3 %
    let thin = v["thin_timed"].as_array().unwrap();
    let thin_splits: Vec<(f64, f64)> = thin.iter().map(|t| (f(t, "split_workgroups"), f(t, "split_min_steps"))).collect();
    let common = (f(&v, "split_workgroups"), f(&v, "split_min_steps"));
    let candidates = [(1024.0, 32.0), (1024.0, 16.0), (2048.0, 16.0), (4096.0, 8.0)];
    assert!(thin_splits[0] == common && thin_splits[1..].iter().eq(candidates.iter().filter(|&&c| c != common)), "{v}");
    assert!(thin.iter().all(|t| (f(t, "m"), f(t, "n"), f(t, "k"), f(t, "batch")) == (128.0, 16.0, 512.0, 1.0) && f(t, "ms") > 0.0), "{v}");
    // the lm_head's input gradient (64 × 64 over 4,096 steps) in both tile sizes, tiles of 128
    // kept for long reductions only where they save 3 %
    let long = &v["long_timed"];
    assert!((f(long, "m"), f(long, "n"), f(long, "k")) == (64.0, 4096.0, 64.0) && f(long, "ms_64") > 0.0 && f(long, "ms_128") > 0.0, "{v}");
    assert_eq!(v["long_wide"].as_bool(), Some(f(long, "ms_128") < 0.97 * f(long, "ms_64")), "{v}");
    let fastest = thin.iter().min_by(|a, b| f(a, "ms").total_cmp(&f(b, "ms"))).unwrap();
    match &v["thin_split"] {
        Value::Null => assert!(f(fastest, "ms") >= 0.97 * f(&thin[0], "ms") || (f(fastest, "split_workgroups"), f(fastest, "split_min_steps")) == common, "{v}"),
        t => assert!(f(t, "workgroups") == f(fastest, "split_workgroups") && f(t, "min_steps") == f(fastest, "split_min_steps") && f(fastest, "ms") < 0.97 * f(&thin[0], "ms"), "{v}"),
    }
    let path = PathBuf::from(v["cache"].as_str().unwrap());
    assert!(path.starts_with(&cache) && !path.exists(), "--quick keeps nothing: {v}");

    // 64 × 64 tiles for a 256 × 256 output by default; 128 × 128 once a tuning says from 1
    let tiles_of_forward = |v: &Value| -> String {
        let row = v["rows"].as_array().unwrap().iter().find(|r| r["op"] == "f32 forward").unwrap_or_else(|| panic!("{v}"));
        row["kernels"][0].as_str().unwrap().to_string()
    };
    let ops = ["ops", "--quick", "--reps", "1", "--filter", "f32 forward"];
    let plain = bench_with(&ops, &gpu, &cache);
    assert!(tiles_of_forward(&plain).ends_with("[64x64]") && plain["adapter"]["tiles"]["wide_outputs"].is_null(), "{plain}");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, r#"{"version": 12, "wide_outputs": 1, "split_workgroups": 512, "split_min_steps": 32, "thin_split": {"workgroups": 2048, "min_steps": 16}, "long_wide": true, "prefetch": false, "steps": 8, "columns": 64, "buffers": 2}"#).unwrap();
    let tuned = bench_with(&ops, &[gpu[0], ("HEARTH_TUNE", "1")], &cache);
    let tiles = &tuned["adapter"]["tiles"];
    assert!(
        tiles_of_forward(&tuned).ends_with("[128x64, loaded in turn, two tiles]") && tiles["wide_outputs"] == 1 && tiles["split_workgroups"] == 512 && tiles["split_min_steps"] == 32 && tiles["thin_split"] == json!({"workgroups": 2048, "min_steps": 16}) && tiles["long_wide"] == true && tiles["steps"] == 8 && tiles["columns"] == 64 && tiles["buffers"] == 2,
        "{tuned}"
    );
    // HEARTH_SPLIT_WORKGROUPS, HEARTH_SPLIT_MIN_STEPS, HEARTH_THIN_SPLIT, HEARTH_TILE_PREFETCH,
    // HEARTH_TILE_STEPS, HEARTH_TILE_COLUMNS and HEARTH_TILE_BUFFERS win over the tuning
    let split = bench_with(&ops, &[gpu[0], ("HEARTH_TUNE", "1"), ("HEARTH_SPLIT_WORKGROUPS", "128"), ("HEARTH_SPLIT_MIN_STEPS", "64"), ("HEARTH_THIN_SPLIT", "4096, 8"), ("HEARTH_TILE_PREFETCH", "1"), ("HEARTH_TILE_STEPS", "16"), ("HEARTH_TILE_COLUMNS", "128"), ("HEARTH_TILE_BUFFERS", "1")], &cache);
    let tiles = &split["adapter"]["tiles"];
    assert!(
        tiles_of_forward(&split).ends_with("[128x128, 16 steps]") && tiles["wide_outputs"] == 1 && tiles["split_workgroups"] == 128 && tiles["split_min_steps"] == 64 && tiles["thin_split"] == json!({"workgroups": 4096, "min_steps": 8}) && tiles["prefetch"] == true && tiles["steps"] == 16 && tiles["columns"] == 128 && tiles["buffers"] == 1,
        "{split}"
    );
    // HEARTH_TILES wins over the tuning
    let forced = bench_with(&ops, &[gpu[0], ("HEARTH_TUNE", "1"), ("HEARTH_TILES", "64")], &cache);
    assert!(tiles_of_forward(&forced).ends_with("[64x64]"), "{forced}");
    std::fs::remove_dir_all(&cache).unwrap();
}

/// `--kernel-stats`: every kernel the step ran, compiled again on a Vulkan device of the
/// bench's own (the same WGSL, override values and shader checks, through naga's SPIR-V
/// writer) for the driver's statistics. lavapipe does not offer them
/// (VK_KHR_pipeline_executable_properties), so here the note says so and each kernel is
/// compiled without them: what CI proves is that every kernel, the GPU kernels' included,
/// compiles on that path; a GPU's driver adds the statistics.
#[test]
fn bench_train_kernel_stats_compile_every_kernel_it_ran() {
    let Some(gpu) = hearth_tests::gpu() else {
        return;
    };
    if gpu.summary().backend != "Vulkan" {
        return;
    }
    let v = bench_with(&["train", "tests/fixtures/tiny-llama", "--seq-len", "16", "--batch-size", "2", "--steps", "1", "--r", "4", "--kernel-stats"], &[("HEARTH_KERNELS", "gpu")], &std::env::temp_dir());
    let stats = &v["kernel_stats"];
    let compiled: Vec<&str> = stats["kernels"].as_array().unwrap_or_else(|| panic!("{stats}")).iter().map(|k| k["kernel"].as_str().unwrap()).collect();
    for k in v["kernels"].as_array().unwrap() {
        let name = k["kernel"].as_str().unwrap();
        let name = name.split('/').next_back().unwrap();
        assert!(compiled.contains(&name), "{name} ran but is not among the compiled kernels {compiled:?}");
    }
    assert!(compiled.iter().any(|k| k.starts_with("matmul_tiled:matmul_tiled")) && compiled.iter().any(|k| k.starts_with("attention_flash:")), "{compiled:?}");
    let offered = stats["note"].is_null();
    for k in stats["kernels"].as_array().unwrap() {
        assert_eq!(k["compiled"], true, "{k}");
        // each kernel's workgroup as its variant sizes it (for the report's occupancy)
        let name = k["kernel"].as_str().unwrap();
        let invocations = k["invocations"].as_u64().unwrap_or_else(|| panic!("{k}"));
        match name {
            n if n.starts_with("matmul_tiled:matmul_tiled [64x64") => assert_eq!((invocations, k["workgroup_bytes"].as_u64()), (64, Some(2 * 8 * 17 * 16)), "{k}"),
            n if n.starts_with("matmul_tiled:matmul_tiled [128x128") => assert_eq!((invocations, k["workgroup_bytes"].as_u64()), (256, Some(2 * 8 * 33 * 16)), "{k}"),
            _ => assert!(invocations > 0 && k["workgroup_bytes"].is_u64(), "{k}"),
        }
        let executables = k["executables"].as_array().unwrap();
        if offered {
            assert!(executables.iter().all(|e| !e["statistics"].as_object().unwrap().is_empty()) && !executables.is_empty(), "{k}");
        } else {
            assert!(executables.is_empty(), "{k}");
        }
    }
    if !offered {
        assert!(stats["note"].as_str().unwrap().contains("does not offer VK_KHR_pipeline_executable_properties"), "{stats}");
    }
}
