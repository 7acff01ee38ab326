/* dshost plugin ABI, version 1.
 *
 * This header is the whole contract between the dshost host and its plugins (models,
 * strategies, launchers, datasets). It is C so that any compiler and any C++ standard library can
 * implement it; no C++ type, exception or std:: object crosses it.
 *
 * Rules that hold for every table and call below:
 *  - Every struct begins with `size_t struct_size`, set by whoever fills it to
 *    sizeof(the struct as it knew it). Fields are only ever appended; a reader touches a
 *    field only when struct_size reaches DSHOST_STRUCT_SIZE(struct, the last field appended
 *    with it). An array of structs (a plugin's options, the host's unit parameter lists) is
 *    read its first element's struct_size apart, so that its struct can grow too (readers
 *    built for 1.7 and later; the host gives older plugins the size they know).
 *  - The entry point `dshost_plugin_v1` returns a static table. The host refuses a plugin
 *    whose abi_major differs from its own, or whose abi_minor is newer than its own.
 *  - Every fallible call returns a dshost_status and, on failure, writes a NUL-terminated
 *    message into the caller's dshost_error. Plugins never let an exception escape.
 *  - Handles are opaque; each create has its destroy. Tensors cross as DLPack: a
 *    DLManagedTensor* given away passes ownership (the receiver calls its deleter); a
 *    DLTensor* passed into a call is borrowed for that call only.
 *  - Buffers are exchanged once at setup. Per-step calls pass indices and counts.
 *  - All plugins of a process share the host's LibTorch. A capsule made by the SDK's
 *    dshost::to_dlpack is received by dshost::from_dlpack as the same LibTorch storage, so
 *    a strategy may empty and refill a buffer it handed out (as ZeRO-3 does with unit
 *    parameters) and the receiver's views follow. Other producers' capsules are imported
 *    as views of their memory, which must then stay where it is.
 */
#ifndef DSHOST_ABI_H_
#define DSHOST_ABI_H_

#include <stddef.h>
#include <stdint.h>

/* One DLPack definition per translation unit: LibTorch ships its own copy with the same
 * include guard, and code that also includes ATen's DLPack converter must see that one. */
#if defined(__has_include)
#if __has_include(<ATen/dlpack.h>)
#include <ATen/dlpack.h>
#else
#include <dlpack/dlpack.h>
#endif
#else
#include <dlpack/dlpack.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define DSHOST_ABI_MAJOR 1
#define DSHOST_ABI_MINOR 8

/* The bytes of `type` up to the end of `field`: what a struct_size must reach for that field
 * to be there. Compare with the last field a minor appended (PJRT's STRUCT_SIZE): a field
 * appended into the padding at the end of the older struct lies within that struct's
 * sizeof, so its offset alone does not tell. */
#define DSHOST_STRUCT_SIZE(type, field) (offsetof(type, field) + sizeof(((type*)0)->field))

#if defined(__GNUC__)
#define DSHOST_EXPORT __attribute__((visibility("default")))
#else
#define DSHOST_EXPORT
#endif

/* ---- status and errors ------------------------------------------------------------ */

typedef enum dshost_status {
  DSHOST_OK = 0,
  DSHOST_INVALID_ARGUMENT = 1, /* the caller or the user's configuration is wrong */
  DSHOST_UNSUPPORTED = 2,      /* valid request this plugin cannot serve (device, dtype) */
  DSHOST_OUT_OF_MEMORY = 3,
  DSHOST_COMM_ERROR = 4, /* a collective failed or timed out: a peer rank died or hangs */
  DSHOST_IO_ERROR = 5,
  DSHOST_INTERNAL = 6,    /* a bug: the message says where */
  DSHOST_RANK_FAILED = 7, /* a launched rank exited non-zero or was killed */
  /* Since ABI 1.6, from a dataset's fill only: this one sample's data is unusable (a file
   * that does not decode); the message names it and says why. The host skips the sample. */
  DSHOST_BAD_SAMPLE = 8
} dshost_status;

#define DSHOST_ERROR_CAPACITY 2048

/* Caller-owned. On failure the callee writes a message that says what went wrong and what
 * to do; it is truncated to fit. */
typedef struct dshost_error {
  size_t struct_size;
  char message[DSHOST_ERROR_CAPACITY];
} dshost_error;

/* ---- plugin descriptor -------------------------------------------------------------- */

typedef enum dshost_plugin_kind {
  DSHOST_KIND_MODEL = 1,
  DSHOST_KIND_STRATEGY = 2,
  DSHOST_KIND_LAUNCHER = 3,
  DSHOST_KIND_DATASET = 4 /* since ABI 1.6 */
} dshost_plugin_kind;

typedef enum dshost_option_type {
  DSHOST_OPTION_INT = 1,
  DSHOST_OPTION_FLOAT = 2,
  DSHOST_OPTION_BOOL = 3,
  DSHOST_OPTION_STRING = 4
} dshost_option_type;

/* One key of the plugin's manifest section ([model], [strategy], [launcher] or [data]). The host
 * validates the section against these before any plugin code runs: unknown keys, types,
 * ranges and allowed strings are reported with the manifest's file:line:column. */
typedef struct dshost_option {
  size_t struct_size;
  const char* name;
  dshost_option_type type;
  const char* default_value; /* TOML literal text: "25", "0.9", "true", "\"cpu\"" */
  const char* allowed;       /* strings: "a|b|c", or NULL for any value */
  int has_range;             /* numbers: nonzero when [min, max] applies */
  double min, max;
  const char* help; /* one line, shown by `dshost plugins` */
} dshost_option;

typedef struct dshost_plugin_descriptor {
  size_t struct_size;
  uint32_t abi_major, abi_minor; /* DSHOST_ABI_MAJOR / DSHOST_ABI_MINOR as built */
  dshost_plugin_kind kind;
  const char* name;        /* the manifest's `plugin = "..."` value */
  const char* version;     /* the plugin's own version */
  const char* description; /* one line */
  /* LibTorch the plugin was built against, "" when it does not use LibTorch. The host
   * refuses a plugin whose torch_version or cxx11_abi differs from its own. */
  const char* torch_version;
  int32_t cxx11_abi;
  const dshost_option* options;
  size_t option_count;
  /* Kind-specific table: dshost_model_api, dshost_strategy_api, dshost_launcher_api or
   * dshost_dataset_api. */
  const void* api;
} dshost_plugin_descriptor;

/* The one exported symbol of a plugin. Returns a static table; never fails. */
typedef const dshost_plugin_descriptor* (*dshost_plugin_v1_fn)(void);
#define DSHOST_ENTRY_SYMBOL_V1 "dshost_plugin_v1"

/* ---- host services ------------------------------------------------------------------ */

typedef struct dshost_host dshost_host; /* opaque; one per plugin instance */
typedef struct dshost_work dshost_work; /* opaque; an asynchronous collective */

typedef enum dshost_log_level {
  DSHOST_LOG_DEBUG = 0,
  DSHOST_LOG_INFO = 1,
  DSHOST_LOG_WARN = 2,
  DSHOST_LOG_ERROR = 3
} dshost_log_level;

typedef enum dshost_precision { DSHOST_FP32 = 0, DSHOST_BF16 = 1 } dshost_precision;

typedef enum dshost_reduce_op { DSHOST_SUM = 0, DSHOST_AVG = 1, DSHOST_MAX = 2 } dshost_reduce_op;

/* Events the model raises while it runs unit by unit; the host relays each to the strategy.
 * grads_ready(u) fires once per backward when every parameter of unit u has its gradient
 * accumulated. Events may arrive on an autograd worker thread. */
typedef enum dshost_unit_event {
  DSHOST_PRE_FORWARD = 0,
  DSHOST_POST_FORWARD = 1,
  DSHOST_PRE_BACKWARD = 2,
  DSHOST_GRADS_READY = 3
} dshost_unit_event;

typedef enum dshost_optimizer_kind { DSHOST_ADAMW = 0, DSHOST_SGD = 1 } dshost_optimizer_kind;

/* The [optimizer] section, resolved. The learning rate of each step comes with step(). */
typedef struct dshost_optimizer_config {
  size_t struct_size;
  dshost_optimizer_kind kind;
  double beta1, beta2, eps, weight_decay; /* AdamW */
  double momentum;                        /* SGD */
} dshost_optimizer_config;

/* A contiguous range of a registered buffer, counted in elements. */
typedef struct dshost_slice {
  size_t struct_size;
  int32_t buffer;
  int64_t offset, count;
} dshost_slice;

typedef struct dshost_services {
  size_t struct_size;
  dshost_host* host; /* pass back as the first argument of every call below */

  int32_t rank, world_size, local_rank, local_world_size;
  DLDevice device; /* where compute runs: kDLCPU or kDLCUDA with the local GPU index */
  dshost_precision precision;
  uint64_t seed;
  const dshost_optimizer_config* optimizer;

  /* Logging into the host's log, tagged with the plugin's name. Thread-safe. */
  void (*log)(dshost_host* host, dshost_log_level level, const char* message);

  /* The plugin's manifest section, validated against its declared options and resolved
   * with defaults. Asking for an undeclared key or the wrong type is INVALID_ARGUMENT.
   * A string stays valid for the life of the plugin instance. */
  dshost_status (*get_int)(dshost_host* host, const char* key, int64_t* out, dshost_error* err);
  dshost_status (*get_float)(dshost_host* host, const char* key, double* out, dshost_error* err);
  dshost_status (*get_bool)(dshost_host* host, const char* key, int32_t* out, dshost_error* err);
  dshost_status (*get_string)(dshost_host* host, const char* key, const char** out,
                              dshost_error* err);

  /* Collectives over all ranks. A buffer is registered once, as a capsule the host takes
   * ownership of (from the SDK's to_dlpack, the host then follows the buffer's storage when
   * the plugin empties and refills it); the memory must outlive the plugin instance.
   * Every collective is asynchronous: it returns a work handle that must be passed to
   * wait() exactly once, which blocks until the result is in place and frees the handle. All ranks
   * must issue collectives in the same order. all_gather: out.count == in.count * world_size, rank
   * r's input lands at out.offset + r * in.count. reduce_scatter: in.count == out.count *
   * world_size. Input and output may overlap. Threads: calls may come from any one thread at a
   * time. */
  dshost_status (*register_buffer)(dshost_host* host, DLManagedTensor* buffer, int32_t* id,
                                   dshost_error* err);
  dshost_status (*all_reduce)(dshost_host* host, const dshost_slice* data, dshost_reduce_op op,
                              dshost_work** work, dshost_error* err);
  dshost_status (*all_gather)(dshost_host* host, const dshost_slice* in, const dshost_slice* out,
                              dshost_work** work, dshost_error* err);
  dshost_status (*reduce_scatter)(dshost_host* host, const dshost_slice* in,
                                  const dshost_slice* out, dshost_reduce_op op, dshost_work** work,
                                  dshost_error* err);
  dshost_status (*broadcast)(dshost_host* host, const dshost_slice* data, int32_t root,
                             dshost_work** work, dshost_error* err);
  dshost_status (*wait)(dshost_host* host, dshost_work* work, dshost_error* err);

  /* Models call this around each unit; the host relays it to the strategy. */
  dshost_status (*unit_event)(dshost_host* host, dshost_unit_event event, int32_t unit,
                              dshost_error* err);
} dshost_services;

/* ---- checkpoints (since ABI 1.2) ----------------------------------------------------- */

/* Where a piece of training state belongs. Plugins never name files or tensors: they give
 * (unit, index) of a parameter and a key, and the host names the tensor after the model's
 * parameter ("features.0.weight" for key "value", "features.0.weight.exp_avg" for key
 * "exp_avg"). `offset` counts elements of that parameter in its memory order, the order
 * its strides lay it out in (so a range of a flat buffer is a range here). unit = -1
 * addresses a tensor of the strategy as a whole, named by `key` ("optimizer.step"), always
 * read and written whole. */
typedef struct dshost_state_slice {
  size_t struct_size;
  int32_t unit, index;
  const char* key;
  int64_t offset;
} dshost_state_slice;

/* The host's side of a save or a load. Both calls block until done and copy: `data` is
 * borrowed for the call, contiguous, on any device, fp32 or int64. read() fails with
 * INVALID_ARGUMENT and a message naming the tensor when the checkpoint lacks it, its shape
 * differs from the model's, or no file holds part of the range. */
typedef struct dshost_state_io {
  size_t struct_size;
  void* context; /* pass back as the first argument */
  dshost_status (*write)(void* context, const dshost_state_slice* where, const DLTensor* data,
                         dshost_error* err);
  dshost_status (*read)(void* context, const dshost_state_slice* where, DLTensor* data,
                        dshost_error* err);
} dshost_state_io;

/* ---- models ------------------------------------------------------------------------- */

typedef struct dshost_model dshost_model;

typedef struct dshost_model_info {
  size_t struct_size;
  int32_t unit_count;
  int64_t parameter_count;
  int64_t forward_flops_per_sample; /* 0 when unknown */
  /* Shape of one input sample (e.g. 1,28,28) and its dtype: float32 images, or int64
   * token ids (e.g. [T] for a language model). */
  int32_t input_ndim;
  int64_t input_shape[8];
  DLDataType input_dtype;
  /* Since ABI 1.1. Shape of one sample's int64 target: ndim 0 (and every 1.0 plugin) means
   * one class id per sample; a language model gives [T], the next token at each position. */
  int32_t target_ndim;
  int64_t target_shape[8];
} dshost_model_info;

typedef struct dshost_param_desc {
  size_t struct_size;
  const char* name;       /* "unit.param", e.g. "features.0.weight"; valid for the model's life */
  DLManagedTensor* value; /* a zero-copy view of the current values; caller owns */
  /* Since ABI 1.2: the name `dshost export` gives it, torchvision's where the model mirrors
   * a torchvision one ("features.0.0.weight"); NULL means `name`. */
  const char* export_name;
  /* Since ABI 1.8: nonzero for a 2-D parameter exported as its transpose, where the mirrored
   * model keeps it so (Hugging Face GPT-2's Conv1D weights, [in, out]). */
  int32_t export_transposed;
} dshost_param_desc;

typedef struct dshost_step_result {
  size_t struct_size;
  double loss; /* mean loss of the micro-batch, before loss_scale */
  /* Since ABI 1.3, set by the host before the call (NULL: not wanted): a one-element
   * float32 tensor on the compute device. The model then copies the loss into it without
   * waiting for the device (no host synchronisation, so the call can be captured in a CUDA
   * graph) and may leave `loss` NaN. */
  DLTensor* loss_out;
} dshost_step_result;

typedef struct dshost_eval_result {
  size_t struct_size;
  double loss_sum; /* summed over the batch's samples */
  int64_t correct; /* correctly classified samples (or tokens) */
  int64_t count;   /* samples (or tokens) counted */
} dshost_eval_result;

typedef struct dshost_model_api {
  size_t struct_size;
  /* Builds the module in host memory, initialised from the seeded global RNG; its buffers
   * (batch-norm statistics) go to services->device, its parameters reach the device through
   * the strategy (bind_param). The services table must outlive the model. */
  dshost_status (*create)(const dshost_services* services, dshost_model** out, dshost_error* err);
  void (*destroy)(dshost_model* model);
  dshost_status (*describe)(dshost_model* model, dshost_model_info* out, dshost_error* err);
  /* Parameters of unit `unit`, in a fixed order; count first, then each one. */
  dshost_status (*param_count)(dshost_model* model, int32_t unit, int32_t* out, dshost_error* err);
  dshost_status (*param)(dshost_model* model, int32_t unit, int32_t index, dshost_param_desc* out,
                         dshost_error* err);
  /* Rebinds a parameter's storage and gradient to memory the strategy owns (same shape and
   * dtype). Takes ownership of both. Backward accumulates into `grad` in place.
   * Since ABI 1.8 `grad` may be NULL: the parameter is frozen (model.freeze), its `value`
   * bound by the host instead of a strategy. The model then computes no gradient for it
   * and raises grads_ready for its unit once the unit's other parameters have theirs (never,
   * where all of them are frozen). The host freezes nothing in a model built for 1.7 or
   * earlier. */
  dshost_status (*bind_param)(dshost_model* model, int32_t unit, int32_t index,
                              DLManagedTensor* value, DLManagedTensor* grad, dshost_error* err);
  /* The host's batch buffers, [max_batch, ...input_shape] and [max_batch, ...target_shape];
   * taken once.
   * Takes ownership. The host fills their leading rows before each call below. */
  dshost_status (*bind_batch)(dshost_model* model, DLManagedTensor* inputs,
                              DLManagedTensor* targets, dshost_error* err);
  /* Forward and backward on the first `batch` rows; gradients are multiplied by
   * loss_scale (1/accumulation steps) and accumulated. Raises unit events. */
  dshost_status (*forward_backward)(dshost_model* model, int64_t batch, double loss_scale,
                                    dshost_step_result* out, dshost_error* err);
  /* Forward only, no gradients, on the first `batch` rows. Raises forward unit events. */
  dshost_status (*evaluate)(dshost_model* model, int64_t batch, dshost_eval_result* out,
                            dshost_error* err);
  /* Since ABI 1.1. The outputs (logits) for the first `batch` rows of the bound inputs, in
   * eval mode, without gradients, as a new float32 tensor the caller owns. */
  dshost_status (*predict)(dshost_model* model, int64_t batch, DLManagedTensor** out,
                           dshost_error* err);
  /* Since ABI 1.2. State that is not a parameter (batch-norm statistics), for checkpoints:
   * count first, then each one by name as a view of the model's own memory (caller owns the
   * view). The host reads them when saving and copies into them when loading. */
  dshost_status (*buffer_count)(dshost_model* model, int32_t* out, dshost_error* err);
  dshost_status (*buffer)(dshost_model* model, int32_t index, dshost_param_desc* out,
                          dshost_error* err);
  /* Since ABI 1.2. Forward FLOPs per sample of one unit (a multiply-add counts 2), 0 when
   * unknown: the host's FLOPs profile. */
  dshost_status (*unit_flops)(dshost_model* model, int32_t unit, int64_t* out, dshost_error* err);
} dshost_model_api;

/* ---- strategies --------------------------------------------------------------------- */

typedef struct dshost_strategy dshost_strategy;

/* The model's parameters of one unit, borrowed for the setup call. */
typedef struct dshost_unit_params {
  size_t struct_size;
  const char* name;
  int32_t count;
  const DLTensor* const* values;
} dshost_unit_params;

typedef struct dshost_step_args {
  size_t struct_size;
  double lr;
  double max_grad_norm; /* <= 0: no clipping */
  /* Since ABI 1.4, set by the host (NULL: not wanted): a one-element float64 tensor on the
   * compute device. A strategy may write the global gradient norm there without waiting for
   * the device (no host synchronisation in the step) and leave stats.grad_norm NaN. */
  DLTensor* grad_norm_out;
  /* Since ABI 1.5 (older hosts: 0). Nonzero: when the global gradient norm is NaN or
   * infinite, drop this step's whole update (parameters, optimizer state and the optimizer's
   * step count stay as they were), deciding on the device without waiting for it. The norm
   * is the same on every rank, so every rank drops the same steps. A strategy built for 1.5
   * or later must honour it; the host refuses train.nonfinite = "skip" with older ones. */
  int32_t skip_nonfinite;
} dshost_step_args;

typedef struct dshost_step_stats {
  size_t struct_size;
  double grad_norm; /* global L2 norm of the averaged gradient, before clipping */
} dshost_step_stats;

/* Bytes this rank holds, measured from the strategy's allocations. */
typedef struct dshost_memory_report {
  size_t struct_size;
  int64_t param_device, param_host;
  int64_t grad_device, grad_host;
  int64_t optim_device, optim_host; /* fp32 masters and optimizer moments */
} dshost_memory_report;

typedef struct dshost_strategy_api {
  size_t struct_size;
  dshost_status (*create)(const dshost_services* services, dshost_strategy** out,
                          dshost_error* err);
  void (*destroy)(dshost_strategy* strategy);
  /* Takes the model's units in forward order, copies their initial values into memory the
   * strategy owns (rank 0's values win), and registers its buffers. Collective. */
  dshost_status (*setup)(dshost_strategy* strategy, const dshost_unit_params* units,
                         int32_t unit_count, dshost_error* err);
  /* Views for the model to bind (see dshost_model_api.bind_param); caller owns both. */
  dshost_status (*param_views)(dshost_strategy* strategy, int32_t unit, int32_t index,
                               DLManagedTensor** value, DLManagedTensor** grad, dshost_error* err);
  /* Before each micro-batch's forward: index in [0, count). Communication of gradients
   * may be deferred until index == count - 1. */
  dshost_status (*begin_micro_batch)(dshost_strategy* strategy, int32_t index, int32_t count,
                                     dshost_error* err);
  dshost_status (*on_unit_event)(dshost_strategy* strategy, dshost_unit_event event, int32_t unit,
                                 dshost_error* err);
  /* After the last micro-batch: finish gradient reduction, clip, update, make parameters
   * whole again for the next forward, zero gradients. Collective. */
  dshost_status (*step)(dshost_strategy* strategy, const dshost_step_args* args,
                        dshost_step_stats* out, dshost_error* err);
  dshost_status (*memory)(dshost_strategy* strategy, dshost_memory_report* out, dshost_error* err);
  /* Since ABI 1.2; NULL or absent: the strategy cannot checkpoint.
   * save: writes this rank's part of the state through io->write, between steps. Between
   * them the ranks must write every element of every parameter's "value" (fp32 masters) and
   * of the optimizer's state (keys "exp_avg", "exp_avg_sq", "momentum"; "optimizer.step");
   * a range written by several ranks must hold the same values. Not collective.
   * load: after setup, reads what this rank owns through io->read and makes the parameters
   * whole for the next forward. Collective. Any strategy loads what any other saved, at any
   * world size. */
  dshost_status (*save)(dshost_strategy* strategy, const dshost_state_io* io, dshost_error* err);
  dshost_status (*load)(dshost_strategy* strategy, const dshost_state_io* io, dshost_error* err);
  /* Since ABI 1.3; NULL or absent means 0. *out = 1 when, with this configuration, the
   * strategy's unit events launch no collectives and wait for nothing, and replays may skip
   * them: the host may then capture one micro-batch's forward_backward in a CUDA graph and
   * replay it for later micro-batches without raising unit events (begin_micro_batch and
   * step are still called every time). Asked once, after setup. */
  dshost_status (*capturable)(dshost_strategy* strategy, int32_t* out, dshost_error* err);
} dshost_strategy_api;

/* ---- launchers ---------------------------------------------------------------------- */

typedef struct dshost_launcher dshost_launcher;

typedef struct dshost_launch_request {
  size_t struct_size;
  /* The command every rank runs, NULL-terminated; argv[0] is an absolute path. */
  const char* const* argv;
  /* Extra KEY=VALUE entries for every rank's environment, NULL-terminated. */
  const char* const* env;
} dshost_launch_request;

typedef struct dshost_launcher_api {
  size_t struct_size;
  dshost_status (*create)(const dshost_services* services, dshost_launcher** out,
                          dshost_error* err);
  void (*destroy)(dshost_launcher* launcher);
  /* Starts every rank with RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and
   * MASTER_PORT set, prefixes their output with the rank, and blocks until all end. When
   * one rank fails the others are stopped. SIGINT/SIGTERM to the caller stop every rank.
   * *exit_code is 0 when all ranks succeeded, else the first failure's code (128 + signal
   * for a signal) and the status is RANK_FAILED, with a message naming rank and host.
   * Other statuses: the ranks could not be started.
   * Since ABI 1.8: a launcher that starts fewer ranks than it is set up for (it left out
   * nodes that did not answer) sets DSHOST_FULL_WORLD_SIZE to the ranks it is set up for, and
   * the host keeps the global batch those would have had by accumulating more. */
  dshost_status (*launch)(dshost_launcher* launcher, const dshost_launch_request* request,
                          int32_t* exit_code, dshost_error* err);
} dshost_launcher_api;

/* ---- datasets (since ABI 1.6) -------------------------------------------------------- */

/* A dataset gives the samples of its splits one at a time, into memory the host owns. The
 * host draws the order (shuffled per epoch, sharded over ranks), runs fill() on a pool of
 * worker threads (data.workers), assembles the samples into batches in host memory, and
 * moves them to the device; images (uint8) are converted and normalised there. Its manifest
 * section is [data]: `dataset` names the plugin, the host's own keys (workers, prefetch,
 * max_bad_files, channels, image_size) sit beside the plugin's declared options. */

typedef struct dshost_dataset dshost_dataset;

typedef enum dshost_split { DSHOST_TRAIN_SPLIT = 0, DSHOST_TEST_SPLIT = 1 } dshost_split;

/* What the host asks of a new dataset: the shape the model takes one sample in ([C, H, W]
 * for images, [T] for token windows; ndim 0 when no model is known, as `dshost check` asks).
 * A dataset that can make samples of any size (crops of image files, windows of a token
 * stream) makes them this size; one of a fixed size describes its own, and the host resizes
 * uint8 images to the model's (data.image_size, data.channels). */
typedef struct dshost_dataset_request {
  size_t struct_size;
  int32_t ndim;
  int64_t shape[8];
} dshost_dataset_request;

typedef struct dshost_dataset_info {
  size_t struct_size;
  int64_t samples[2]; /* by dshost_split; 0: the split is empty (no evaluation) */
  /* Targets lie in [0, classes): image classes, or for token windows the vocabulary the data
   * uses. The host compares it with the model's outputs before training. */
  int64_t classes;
  /* One sample's input: uint8 images [C, H, W] (C <= 4), int64 token ids [T], or float32. */
  int32_t input_ndim;
  int64_t input_shape[8];
  DLDataType input_dtype;
  /* One sample's int64 target: ndim 0 is one class id; token windows give [T]. */
  int32_t target_ndim;
  int64_t target_shape[8];
  /* uint8 images: the model sees (value / 255 - mean[c]) / std[c] for channel c. */
  double mean[4], std[4];
} dshost_dataset_info;

/* One sample to fill. The host sets everything but the written_* fields. */
typedef struct dshost_sample {
  size_t struct_size;
  dshost_split split;
  int64_t index; /* in [0, samples[split]) */
  /* Nonzero: training's random augmentation, drawn from `seed` alone (the same seed gives
   * the same sample on any thread, rank or run); 0: evaluation's fixed transform. */
  int32_t augment;
  uint64_t seed;
  void* input;     /* host memory for input_shape of input_dtype, contiguous */
  int64_t* target; /* host memory for target_shape */
  /* Set by fill: the input shape it wrote. The host refuses a sample whose shape differs
   * from the one describe gave. */
  int32_t written_ndim;
  int64_t written_shape[8];
  /* Since ABI 1.7: images the host decodes itself (data.decode = "gpu"). Where the host sets
   * encoded_buffer, a dataset whose sample is a complete JPEG file of grey or YCbCr pixels
   * may give the file instead of pixels: it asks encoded_buffer for the file's size (host
   * memory, NULL when none could be had), copies the file there, sets encoded_size, box,
   * mirror and box_only, and returns the shape it would have written. The host decodes the
   * file and resamples `box` of it to that shape's height and width with Pillow's bilinear
   * filter (antialiased), as torchvision's resize does. */
  void* (*encoded_buffer)(struct dshost_sample* sample, size_t size);
  void* host_data;     /* the host's, for encoded_buffer */
  size_t encoded_size; /* 0: fill wrote pixels */
  double box[4];       /* top, left, height, width, in pixels of the full-size image */
  int32_t mirror;      /* nonzero: mirrored left to right after resampling */
  /* Nonzero: the filter reads only the pixels inside box, whose edges are then whole pixels
   * (a crop resized: RandomResizedCrop); 0: the whole image is resized and box cut from the
   * result (Resize, then CenterCrop). */
  int32_t box_only;
} dshost_sample;

typedef struct dshost_dataset_api {
  size_t struct_size;
  /* Opens the data named by the plugin's options and checks it: a path that does not hold
   * the data is INVALID_ARGUMENT with a message that names the file and what to do. The
   * services table outlives the dataset; its collectives are not to be used. */
  dshost_status (*create)(const dshost_services* services, const dshost_dataset_request* request,
                          dshost_dataset** out, dshost_error* err);
  void (*destroy)(dshost_dataset* dataset);
  dshost_status (*describe)(dshost_dataset* dataset, dshost_dataset_info* out, dshost_error* err);
  /* Writes one sample. Threads: the host calls fill from many threads at once, each with its
   * own dshost_sample and memory, and never during create, describe or destroy; what fill
   * reads of the dataset must not change, and what it changes (a cache, a file handle) it
   * must lock or keep per thread. fill may log, and must start no threads and use no
   * LibTorch operation that runs on the intra-op pool (the host's workers are the
   * parallelism). BAD_SAMPLE: this sample cannot be made; the host warns once, fills its
   * place with the next sample of the split, and ends the run past data.max_bad_files.
   * Any other failure ends the run with the message. */
  dshost_status (*fill)(dshost_dataset* dataset, dshost_sample* sample, dshost_error* err);
} dshost_dataset_api;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DSHOST_ABI_H_ */
