#include "core/config.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>

namespace dshost {
namespace {

const Keys<RunConfig> kRun{
    key(&RunConfig::name, "name", "\"run\"", "run name; the run directory is output_dir/name"),
    key(&RunConfig::output_dir, "output_dir", "\"runs\"", "where run directories go"),
    key(&RunConfig::seed, "seed", "0", 0, 9.2e18, "seeds model init and data order"),
    key(&RunConfig::log_all_ranks, "log_all_ranks", "false",
        "log info lines from every rank, not only rank 0"),
};
const Keys<TrainConfig> kTrain{
    key(&TrainConfig::epochs, "epochs", "1", 1, 1e9, "passes over the training split"),
    key(&TrainConfig::max_steps, "max_steps", "0", 0, 1e12,
        "stop after this many optimizer steps; 0 = no limit"),
    key(&TrainConfig::micro_batch_size, "micro_batch_size", "32", 1, 1 << 20,
        "samples per rank per forward"),
    key(&TrainConfig::grad_accum_steps, "grad_accum_steps", "1", 1, 1 << 20,
        "micro-batches per optimizer step"),
    key(&TrainConfig::eval_batch_size, "eval_batch_size", "256", 1, 1 << 20,
        "samples per rank per evaluation forward"),
    key(&TrainConfig::grad_clip, "grad_clip", "0.0", 0, 1e30,
        "max global gradient L2 norm; 0 = no clipping"),
    key(&TrainConfig::precision, "precision", "\"fp32\"",
        "compute precision (fp8: bf16, with the model's fp8 layers multiplying in fp8)"),
    key(&TrainConfig::device, "device", "\"cpu\"",
        "where each rank computes (cuda: GPU LOCAL_RANK)"),
    key(&TrainConfig::log_every, "log_every", "50", 1, 1e9,
        "optimizer steps between progress lines"),
    key(&TrainConfig::eval, "eval", "true", "evaluate on the test split after every epoch"),
    key(&TrainConfig::threads, "threads", "0", 0, 4096,
        "CPU threads per rank; 0 = cores / local ranks"),
    key(&TrainConfig::peak_tflops, "peak_tflops", "0", 0, 1e6,
        "one device's peak TFLOP/s for MFU; 0 = H100 / H200's dense bf16 (989) or tf32 (495)"),
    key(&TrainConfig::cuda_graph, "cuda_graph", "false",
        "capture a micro-batch's forward/backward in a CUDA graph and replay it (ddp)"),
    key(&TrainConfig::cudnn_benchmark, "cudnn_benchmark", "true",
        "let cuDNN time its algorithms per shape (false: runs repeat bit for bit)"),
    key(&TrainConfig::profile_steps, "profile_steps", "0", 0, 1e6,
        "optimizer steps recorded by PyTorch's profiler into run_dir/profile/rank<R>.pt.trace.json "
        "(a Chrome trace: operators, allocations, and kernels on CUDA); 0 = off"),
    key(&TrainConfig::profile_after, "profile_after", "5", 0, 1e12,
        "steps run before the profiled ones (warm-up)"),
    key(&TrainConfig::nonfinite, "nonfinite", "\"stop\"",
        "a NaN or infinite loss or gradient norm: stop (end the run at the next progress report, "
        "naming the first such step and the ranks, before any checkpoint of that state), skip "
        "(drop the update of a step whose gradient norm is not finite; 10 in a row end the run) "
        "or ignore (train on)"),
};
const Keys<OptimizerConfig> kOptimizer{
    key(&OptimizerConfig::name, "name", "\"adamw\"", "optimizer"),
    key(&OptimizerConfig::lr, "lr", "0.001", 0, 1e6, "peak learning rate"),
    key(&OptimizerConfig::beta1, "beta1", "0.9", 0, 0.999999, "AdamW first-moment decay"),
    key(&OptimizerConfig::beta2, "beta2", "0.999", 0, 0.999999, "AdamW second-moment decay"),
    key(&OptimizerConfig::eps, "eps", "1e-8", 0, 1, "AdamW denominator epsilon"),
    key(&OptimizerConfig::weight_decay, "weight_decay", "0.01", 0, 1e3,
        "decoupled (AdamW) or L2 (SGD) weight decay"),
    key(&OptimizerConfig::momentum, "momentum", "0.0", 0, 0.999999, "SGD momentum"),
};
const Keys<SchedulerConfig> kScheduler{
    key(&SchedulerConfig::warmup_steps, "warmup_steps", "0", 0, 1e12,
        "linear warmup from 0 to lr over these steps"),
    key(&SchedulerConfig::decay, "decay", "\"cosine\"", "shape after warmup"),
    key(&SchedulerConfig::min_lr_ratio, "min_lr_ratio", "0.0", 0, 1,
        "final lr as a fraction of lr"),
};
const Keys<DataConfig> kData{
    key(&DataConfig::dataset, "dataset", "\"fashion_mnist\"",
        "the dataset plugin (`dshost plugins` lists them): fashion_mnist, cifar10, image_folder, "
        "webdataset, synthetic, text, tokens, or one of your own; its own keys sit beside these"),
    key(&DataConfig::channels, "channels", "0", 0, 64,
        "channels shown to the model (grey images repeated); 0 = the dataset's own"),
    key(&DataConfig::image_size, "image_size", "0", 0, 4096,
        "height = width shown to the model (bilinear resize); 0 = the dataset's own"),
    key(&DataConfig::workers, "workers", "0", 0, 1024,
        "threads per rank that make samples (decode, crop, ...); 0 = on a GPU, the rank's share of "
        "the cores less one, on the CPU one"),
    key(&DataConfig::prefetch, "prefetch", "4", 0, 64,
        "batches the workers prepare ahead of the step (and of evaluation)"),
    key(&DataConfig::decode, "decode", "\"auto\"",
        "where JPEG files are decoded: cpu (the workers, libjpeg-turbo), gpu (nvJPEG on the rank's "
        "GPU, its "
        "hardware JPEG decoder where it has one: for hosts with few cores per GPU), auto = cpu"),
    key(&DataConfig::max_bad_files, "max_bad_files", "100", 0, 1e12,
        "samples that cannot be made (files that do not decode) are skipped with a warning, each "
        "one's place taken by the next sample; more than this many stop the run"),
};
const Keys<ModelConfig> kModel{
    key(&ModelConfig::init_from, "init_from", "\"\"",
        "a safetensors file of pretrained weights under the names the model exports "
        "(torchvision's for the image models): loaded strictly before training"),
    key(&ModelConfig::init_skip, "init_skip", "\"\"",
        "comma-separated globs of tensors init_from leaves at their initialisation, e.g. "
        "\"classifier.*\""),
    key(&ModelConfig::freeze, "freeze", "\"\"",
        "comma-separated globs of parameters (by exported name) kept as they are: no gradient, "
        "no optimizer state, no communication, e.g. \"features.*\" to train only the head"),
};
const Keys<LauncherConfig> kLauncher{
    key(&LauncherConfig::max_restarts, "max_restarts", "0", 0, 1000,
        "after a rank fails (not for bad input or an interruption), stop every rank and start "
        "the job again from its latest checkpoint, up to this many times (torchrun's "
        "--max-restarts)"),
};
const Keys<CommConfig> kComm{
    key(&CommConfig::timeout_s, "timeout_s", "300", 1, 1e6,
        "a collective or rendezvous waiting longer fails the job, naming the rank"),
};
const Keys<CheckpointConfig> kCheckpoint{
    key(&CheckpointConfig::dir, "dir", "\"\"",
        "where checkpoints go; \"\" = the run directory's checkpoints/"),
    key(&CheckpointConfig::every_steps, "every_steps", "0", 0, 1e12,
        "save every N optimizer steps; 0 = not by steps"),
    key(&CheckpointConfig::at_epoch_end, "at_epoch_end", "false", "save after every epoch"),
    key(&CheckpointConfig::keep, "keep", "3", 0, 1e9, "newest checkpoints kept; 0 = all"),
    key(&CheckpointConfig::resume, "resume", "\"auto\"",
        "auto (the newest checkpoint in dir, if any), never, or a checkpoint directory"),
};
const Keys<PluginsConfig> kPlugins{
    key(&PluginsConfig::paths, "paths", "\"\"",
        "extra plugin folders, ':'-separated, searched first"),
};

// run.name is one folder under run.output_dir: no separator, no parent, no control
// characters (a newline would also split the log lines that name it).
void check_run_name(const Value& name) {
  const std::string& s = name.s;
  const bool control = std::any_of(
      s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
  if (s.empty() || s.find('/') != std::string::npos || s.find("..") != std::string::npos ||
      s == "." || control)
    throw UserError(
        cat(name.origin, ": error: run.name = \"", control ? "(control characters)" : s,
            "\" must name one folder inside run.output_dir: no '/', no '..', no line "
            "breaks or other control characters; choose a plain name such as \"resnet50-a\""));
}

}  // namespace

Config read_config(const Manifest& m) {
  m.check_sections({"run", "train", "optimizer", "scheduler", "data", "comm", "checkpoint",
                    "plugins", "model", "strategy", "launcher"});
  Config c;
  const Section run = m.resolve("run", kRun.table());
  check_run_name(run.at("name"));
  c.run = kRun.read(run);
  c.train = kTrain.read(m.resolve("train", kTrain.table()));
  c.optimizer = kOptimizer.read(m.resolve("optimizer", kOptimizer.table()));
  c.scheduler = kScheduler.read(m.resolve("scheduler", kScheduler.table()));
  c.comm = kComm.read(m.resolve("comm", kComm.table()));
  c.checkpoint = kCheckpoint.read(m.resolve("checkpoint", kCheckpoint.table()));
  if (c.checkpoint.dir.empty()) c.checkpoint.dir = c.run.dir() + "/checkpoints";
  c.plugins = kPlugins.read(m.resolve("plugins", kPlugins.table()));
  return c;
}

const Keys<DataConfig>& data_keys() { return kData; }

const Keys<ModelConfig>& model_keys() { return kModel; }

const Keys<LauncherConfig>& launcher_keys() { return kLauncher; }

}  // namespace dshost
