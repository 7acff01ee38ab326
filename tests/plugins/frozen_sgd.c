/* frozen_sgd: a strategy written in C against the frozen copy of ABI 1.0
 * (tests/abi/v1.0/dshost/abi.h) and nothing else: no SDK helper, no LibTorch. It stands for
 * a plugin built when 1.0 was released, which every later 1.x host must load and run. Built
 * again against each later release's frozen header (tests/abi/v1.N) as FROZEN_NAME
 * "frozen_sgd_abi1N", it stands for one built then that uses 1.0's calls only.
 *
 * Plain data parallel SGD on fp32 CPU tensors: whole parameters and gradients on every
 * rank, gradients averaged by one all-reduce in step(), then p -= lr * (g + wd * p). */
#include <dshost/abi.h>

#ifndef FROZEN_NAME
#define FROZEN_NAME "frozen_sgd"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct frozen_view {
  DLManagedTensor managed;
  int64_t shape[8], strides[8];
} frozen_view;

typedef struct frozen_param {
  int64_t offset, numel;
  int32_t ndim;
  int64_t shape[8], strides[8];
} frozen_param;

typedef struct frozen_sgd {
  const dshost_services* services;
  frozen_param* params; /* [unit_first[u] + index] */
  int32_t* unit_first;
  float *values, *grads;
  int64_t total;
  int32_t value_id, grad_id;
} frozen_sgd;

static dshost_status fail(dshost_error* err, dshost_status status, const char* message) {
  snprintf(err->message, DSHOST_ERROR_CAPACITY, FROZEN_NAME ": %s", message);
  return status;
}

static void free_view(DLManagedTensor* self) { free(self->manager_ctx); }

/* A capsule viewing `data` with the given shape and strides; the receiver frees it. */
static DLManagedTensor* view_of(float* data, int32_t ndim, const int64_t* shape,
                                const int64_t* strides) {
  frozen_view* v = calloc(1, sizeof(frozen_view));
  memcpy(v->shape, shape, sizeof(int64_t) * ndim);
  memcpy(v->strides, strides, sizeof(int64_t) * ndim);
  v->managed.dl_tensor.data = data;
  v->managed.dl_tensor.device.device_type = kDLCPU;
  v->managed.dl_tensor.ndim = ndim;
  v->managed.dl_tensor.dtype.code = kDLFloat;
  v->managed.dl_tensor.dtype.bits = 32;
  v->managed.dl_tensor.dtype.lanes = 1;
  v->managed.dl_tensor.shape = v->shape;
  v->managed.dl_tensor.strides = v->strides;
  v->managed.manager_ctx = v;
  v->managed.deleter = free_view;
  return &v->managed;
}

static dshost_slice whole(int32_t buffer, int64_t count) {
  dshost_slice s = {sizeof(dshost_slice), buffer, 0, count};
  return s;
}

static dshost_status create(const dshost_services* services, dshost_strategy** out,
                            dshost_error* err) {
  if (services->device.device_type != kDLCPU)
    return fail(err, DSHOST_UNSUPPORTED, "runs on the CPU only; set train.device = \"cpu\"");
  if (services->precision != DSHOST_FP32)
    return fail(err, DSHOST_UNSUPPORTED, "computes in fp32 only; set train.precision = \"fp32\"");
  if (services->optimizer->kind != DSHOST_SGD || services->optimizer->momentum != 0)
    return fail(err, DSHOST_INVALID_ARGUMENT, "needs optimizer.name = \"sgd\" with momentum 0");
  frozen_sgd* s = calloc(1, sizeof(frozen_sgd));
  s->services = services;
  *out = (dshost_strategy*)s;
  return DSHOST_OK;
}

static void destroy(dshost_strategy* strategy) {
  frozen_sgd* s = (frozen_sgd*)strategy;
  free(s->params);
  free(s->unit_first);
  free(s->values);
  free(s->grads);
  free(s);
}

static dshost_status setup(dshost_strategy* strategy, const dshost_unit_params* units,
                           int32_t unit_count, dshost_error* err) {
  frozen_sgd* s = (frozen_sgd*)strategy;
  const dshost_services* h = s->services;
  int32_t count = 0;
  s->unit_first = calloc((size_t)unit_count + 1, sizeof(int32_t));
  for (int32_t u = 0; u < unit_count; ++u) {
    s->unit_first[u] = count;
    count += units[u].count;
  }
  s->unit_first[unit_count] = count;
  s->params = calloc((size_t)count, sizeof(frozen_param));
  for (int32_t u = 0, k = 0; u < unit_count; ++u)
    for (int32_t i = 0; i < units[u].count; ++i, ++k) {
      const DLTensor* t = units[u].values[i];
      if (t->dtype.code != kDLFloat || t->dtype.bits != 32 || t->ndim > 8)
        return fail(err, DSHOST_UNSUPPORTED, "takes fp32 parameters of at most 8 dimensions");
      frozen_param* p = &s->params[k];
      p->offset = s->total;
      p->ndim = t->ndim;
      p->numel = 1;
      for (int32_t d = t->ndim - 1; d >= 0; --d) { /* NULL strides: row-major */
        p->shape[d] = t->shape[d];
        p->strides[d] = t->strides ? t->strides[d] : p->numel;
        p->numel *= t->shape[d];
      }
      s->total += p->numel;
    }
  s->values = calloc((size_t)s->total, sizeof(float));
  s->grads = calloc((size_t)s->total, sizeof(float));
  /* Dense parameters keep their strides in the flat buffer, so memory order copies as is. */
  for (int32_t u = 0, k = 0; u < unit_count; ++u)
    for (int32_t i = 0; i < units[u].count; ++i, ++k) {
      const DLTensor* t = units[u].values[i];
      memcpy(s->values + s->params[k].offset, (const char*)t->data + t->byte_offset,
             sizeof(float) * (size_t)s->params[k].numel);
    }
  const int64_t flat_shape[1] = {s->total}, flat_stride[1] = {1};
  dshost_status st = h->register_buffer(h->host, view_of(s->values, 1, flat_shape, flat_stride),
                                        &s->value_id, err);
  if (st == DSHOST_OK)
    st = h->register_buffer(h->host, view_of(s->grads, 1, flat_shape, flat_stride), &s->grad_id,
                            err);
  dshost_work* work = NULL;
  const dshost_slice values = whole(s->value_id, s->total);
  if (st == DSHOST_OK) st = h->broadcast(h->host, &values, 0, &work, err); /* rank 0's win */
  if (st == DSHOST_OK) st = h->wait(h->host, work, err);
  return st;
}

static dshost_status param_views(dshost_strategy* strategy, int32_t unit, int32_t index,
                                 DLManagedTensor** value, DLManagedTensor** grad,
                                 dshost_error* err) {
  (void)err;
  frozen_sgd* s = (frozen_sgd*)strategy;
  const frozen_param* p = &s->params[s->unit_first[unit] + index];
  *value = view_of(s->values + p->offset, p->ndim, p->shape, p->strides);
  *grad = view_of(s->grads + p->offset, p->ndim, p->shape, p->strides);
  return DSHOST_OK;
}

static dshost_status begin_micro_batch(dshost_strategy* strategy, int32_t index, int32_t count,
                                       dshost_error* err) {
  (void)strategy, (void)index, (void)count, (void)err;
  return DSHOST_OK;
}

static dshost_status on_unit_event(dshost_strategy* strategy, dshost_unit_event event, int32_t unit,
                                   dshost_error* err) {
  (void)strategy, (void)event, (void)unit, (void)err;
  return DSHOST_OK;
}

static dshost_status step(dshost_strategy* strategy, const dshost_step_args* args,
                          dshost_step_stats* out, dshost_error* err) {
  frozen_sgd* s = (frozen_sgd*)strategy;
  const dshost_services* h = s->services;
  dshost_work* work = NULL;
  const dshost_slice grads = whole(s->grad_id, s->total);
  dshost_status st = h->all_reduce(h->host, &grads, DSHOST_SUM, &work, err);
  if (st == DSHOST_OK) st = h->wait(h->host, work, err);
  if (st != DSHOST_OK) return st;
  double sum_of_squares = 0;
  for (int64_t i = 0; i < s->total; ++i) {
    s->grads[i] /= (float)h->world_size;
    sum_of_squares += (double)s->grads[i] * s->grads[i];
  }
  const double norm = sqrt(sum_of_squares);
  const float clip = args->max_grad_norm > 0 && norm > args->max_grad_norm
                         ? (float)(args->max_grad_norm / (norm + 1e-6))
                         : 1.0f;
  const float lr = (float)args->lr, decay = (float)h->optimizer->weight_decay;
  for (int64_t i = 0; i < s->total; ++i) {
    const float g = s->grads[i] * clip + decay * s->values[i];
    s->values[i] -= lr * g;
    s->grads[i] = 0;
  }
  out->struct_size = sizeof(dshost_step_stats);
  out->grad_norm = norm;
  return DSHOST_OK;
}

static dshost_status memory(dshost_strategy* strategy, dshost_memory_report* out,
                            dshost_error* err) {
  (void)err;
  const frozen_sgd* s = (const frozen_sgd*)strategy;
  memset(out, 0, sizeof(*out));
  out->struct_size = sizeof(dshost_memory_report);
  out->param_device = out->grad_device = s->total * (int64_t)sizeof(float); /* CPU runs */
  return DSHOST_OK;
}

static const dshost_strategy_api kApi = {
    sizeof(dshost_strategy_api), create,        destroy, setup, param_views,
    begin_micro_batch,           on_unit_event, step,    memory};

static const dshost_plugin_descriptor kDescriptor = {sizeof(dshost_plugin_descriptor),
                                                     DSHOST_ABI_MAJOR,
                                                     DSHOST_ABI_MINOR,
                                                     DSHOST_KIND_STRATEGY,
                                                     FROZEN_NAME,
                                                     "1.0.0",
                                                     "plain SGD in C against a frozen ABI header",
                                                     "",
                                                     -1,
                                                     NULL,
                                                     0,
                                                     &kApi};

DSHOST_EXPORT const dshost_plugin_descriptor* dshost_plugin_v1(void) { return &kDescriptor; }
