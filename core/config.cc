#include "core/config.h"

#include "core/error.h"

#include <algorithm>
#include <cmath>

namespace dshost {
namespace {

constexpr auto INT = DSHOST_OPTION_INT;
constexpr auto FLOAT = DSHOST_OPTION_FLOAT;
constexpr auto BOOL = DSHOST_OPTION_BOOL;
constexpr auto STRING = DSHOST_OPTION_STRING;

dshost_option opt(const char* name, dshost_option_type type, const char* default_value,
                  const char* help, const char* allowed = nullptr) {
  return {sizeof(dshost_option), name, type, default_value, allowed, 0, 0, 0, help};
}
dshost_option ranged(const char* name, dshost_option_type type, const char* default_value,
                     double min, double max, const char* help) {
  return {sizeof(dshost_option), name, type, default_value, nullptr, 1, min, max, help};
}

const dshost_option kRun[] = {
    opt("name", STRING, "\"run\"", "run name; the run directory is output_dir/name"),
    opt("output_dir", STRING, "\"runs\"", "where run directories go"),
    ranged("seed", INT, "0", 0, 9.2e18, "seeds model init and data order"),
    opt("log_all_ranks", BOOL, "false", "log info lines from every rank, not only rank 0"),
};
const dshost_option kTrain[] = {
    ranged("epochs", INT, "1", 1, 1e9, "passes over the training split"),
    ranged("max_steps", INT, "0", 0, 1e12, "stop after this many optimizer steps; 0 = no limit"),
    ranged("micro_batch_size", INT, "32", 1, 1 << 20, "samples per rank per forward"),
    ranged("grad_accum_steps", INT, "1", 1, 1 << 20, "micro-batches per optimizer step"),
    ranged("eval_batch_size", INT, "256", 1, 1 << 20, "samples per rank per evaluation forward"),
    ranged("grad_clip", FLOAT, "0.0", 0, 1e30, "max global gradient L2 norm; 0 = no clipping"),
    opt("precision", STRING, "\"fp32\"", "compute precision", "fp32|bf16"),
    opt("device", STRING, "\"cpu\"", "where each rank computes (cuda: GPU LOCAL_RANK)", "cpu|cuda"),
    ranged("log_every", INT, "50", 1, 1e9, "optimizer steps between progress lines"),
    opt("eval", BOOL, "true", "evaluate on the test split after every epoch"),
    ranged("threads", INT, "0", 0, 4096, "CPU threads per rank; 0 = cores / local ranks"),
    ranged("peak_tflops", FLOAT, "0", 0, 1e6,
           "one device's peak TFLOP/s for MFU; 0 = H100 / H200's dense bf16 (989) or tf32 (495)"),
    opt("cuda_graph", BOOL, "false",
        "capture a micro-batch's forward/backward in a CUDA graph and replay it (ddp)"),
    opt("cudnn_benchmark", BOOL, "true",
        "let cuDNN time its algorithms per shape (false: runs repeat bit for bit)"),
    ranged(
        "profile_steps", INT, "0", 0, 1e6,
        "optimizer steps recorded by PyTorch's profiler into run_dir/profile/rank<R>.pt.trace.json "
        "(a Chrome trace: operators, allocations, and kernels on CUDA); 0 = off"),
    ranged("profile_after", INT, "5", 0, 1e12, "steps run before the profiled ones (warm-up)"),
    opt("nonfinite", STRING, "\"stop\"",
        "a NaN or infinite loss or gradient norm: stop (end the run at the next progress report, "
        "naming the first such step and the ranks, before any checkpoint of that state), skip "
        "(drop the update of a step whose gradient norm is not finite; 10 in a row end the run) "
        "or ignore (train on)",
        "stop|skip|ignore"),
};
const dshost_option kOptimizer[] = {
    opt("name", STRING, "\"adamw\"", "optimizer", "adamw|sgd"),
    ranged("lr", FLOAT, "0.001", 0, 1e6, "peak learning rate"),
    ranged("beta1", FLOAT, "0.9", 0, 0.999999, "AdamW first-moment decay"),
    ranged("beta2", FLOAT, "0.999", 0, 0.999999, "AdamW second-moment decay"),
    ranged("eps", FLOAT, "1e-8", 0, 1, "AdamW denominator epsilon"),
    ranged("weight_decay", FLOAT, "0.01", 0, 1e3, "decoupled (AdamW) or L2 (SGD) weight decay"),
    ranged("momentum", FLOAT, "0.0", 0, 0.999999, "SGD momentum"),
};
const dshost_option kScheduler[] = {
    ranged("warmup_steps", INT, "0", 0, 1e12, "linear warmup from 0 to lr over these steps"),
    opt("decay", STRING, "\"cosine\"", "shape after warmup", "cosine|linear|constant"),
    ranged("min_lr_ratio", FLOAT, "0.0", 0, 1, "final lr as a fraction of lr"),
};
const dshost_option kData[] = {
    opt("dataset", STRING, "\"fashion_mnist\"",
        "the dataset plugin (`dshost plugins` lists them): fashion_mnist, cifar10, image_folder, "
        "webdataset, synthetic, text, tokens, or one of your own; its own keys sit beside these"),
    ranged("channels", INT, "0", 0, 64,
           "channels shown to the model (grey images repeated); 0 = the dataset's own"),
    ranged("image_size", INT, "0", 0, 4096,
           "height = width shown to the model (bilinear resize); 0 = the dataset's own"),
    ranged(
        "workers", INT, "0", 0, 1024,
        "threads per rank that make samples (decode, crop, ...); 0 = on a GPU, the rank's share of "
        "the cores less one, on the CPU one"),
    ranged("prefetch", INT, "4", 0, 64,
           "batches the workers prepare ahead of the step (and of evaluation)"),
    opt("decode", STRING, "\"auto\"",
        "where JPEG files are decoded: cpu (the workers, libjpeg-turbo), gpu (nvJPEG on the rank's "
        "GPU, its "
        "hardware JPEG decoder where it has one: for hosts with few cores per GPU), auto = cpu",
        "auto|cpu|gpu"),
    ranged(
        "max_bad_files", INT, "100", 0, 1e12,
        "samples that cannot be made (files that do not decode) are skipped with a warning, each "
        "one's place taken by the next sample; more than this many stop the run"),
};
const dshost_option kComm[] = {
    ranged("timeout_s", FLOAT, "300", 1, 1e6,
           "a collective or rendezvous waiting longer fails the job, naming the rank"),
};
const dshost_option kCheckpoint[] = {
    opt("dir", STRING, "\"\"", "where checkpoints go; \"\" = the run directory's checkpoints/"),
    ranged("every_steps", INT, "0", 0, 1e12, "save every N optimizer steps; 0 = not by steps"),
    opt("at_epoch_end", BOOL, "false", "save after every epoch"),
    ranged("keep", INT, "3", 0, 1e9, "newest checkpoints kept; 0 = all"),
    opt("resume", STRING, "\"auto\"",
        "auto (the newest checkpoint in dir, if any), never, or a checkpoint directory"),
};
const dshost_option kPlugins[] = {
    opt("paths", STRING, "\"\"", "extra plugin folders, ':'-separated, searched first"),
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

template <size_t N>
OptionTable table(const dshost_option (&options)[N]) {
  return {options, N};
}

}  // namespace

Config read_config(const Manifest& m) {
  m.check_sections({"run", "train", "optimizer", "scheduler", "data", "comm", "checkpoint",
                    "plugins", "model", "strategy", "launcher"});
  Config c;
  const Section run = m.resolve("run", table(kRun));
  check_run_name(run.at("name"));
  c.run = {run.get_string("name"), run.get_string("output_dir"), run.get_int("seed"),
           run.get_bool("log_all_ranks")};
  const Section t = m.resolve("train", table(kTrain));
  c.train = {t.get_int("epochs"),           t.get_int("max_steps"),
             t.get_int("micro_batch_size"), t.get_int("grad_accum_steps"),
             t.get_int("eval_batch_size"),  t.get_float("grad_clip"),
             t.get_string("precision"),     t.get_string("device"),
             t.get_int("log_every"),        t.get_bool("eval"),
             t.get_int("threads"),          t.get_float("peak_tflops"),
             t.get_bool("cuda_graph"),      t.get_bool("cudnn_benchmark"),
             t.get_int("profile_steps"),    t.get_int("profile_after"),
             t.get_string("nonfinite")};
  const Section o = m.resolve("optimizer", table(kOptimizer));
  c.optimizer = {o.get_string("name"),   o.get_float("lr"),  o.get_float("beta1"),
                 o.get_float("beta2"),   o.get_float("eps"), o.get_float("weight_decay"),
                 o.get_float("momentum")};
  const Section s = m.resolve("scheduler", table(kScheduler));
  c.scheduler = {s.get_int("warmup_steps"), s.get_string("decay"), s.get_float("min_lr_ratio")};
  c.comm = {m.resolve("comm", table(kComm)).get_float("timeout_s")};
  const Section k = m.resolve("checkpoint", table(kCheckpoint));
  c.checkpoint = {k.get_string("dir"), k.get_int("every_steps"), k.get_bool("at_epoch_end"),
                  k.get_int("keep"), k.get_string("resume")};
  if (c.checkpoint.dir.empty()) c.checkpoint.dir = c.run.dir() + "/checkpoints";
  c.plugin_paths = m.resolve("plugins", table(kPlugins)).get_string("paths");
  return c;
}

OptionTable host_data_options() { return table(kData); }

DataConfig read_data_config(const Section& d) {
  return {d.get_string("dataset"),   d.get_int("channels"), d.get_int("image_size"),
          d.get_int("workers"),      d.get_int("prefetch"), d.get_string("decode"),
          d.get_int("max_bad_files")};
}

}  // namespace dshost
