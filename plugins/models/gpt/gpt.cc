// gpt: a decoder-only transformer as GPT-2 builds it (pre-LayerNorm blocks of causal
// self-attention and a GELU MLP, learned positions, the output projection tied to the token
// embedding), with presets for GPT-2 124M, 350M and 774M and a 1.3B shape (GPT-3 XL's:
// 24 layers of 2048), or free sizes.
//
// Units: embed (token and position embeddings), one per block (h0, h1, ...), head (final
// LayerNorm). The logits reuse the embed unit's token embedding, so that unit stays
// gathered from its forward to the end of backward: forward raises no post_forward for it,
// and its pre_backward comes with the embeddings' gradient (zero3 then frees it after
// grads_ready, as FSDP keeps tied weights in the root unit).
#include "../common/cross_entropy.hpp"
#include "../common/bf16_linear.hpp"
#include "../common/fp8_linear.hpp"
#include "../common/fp8_mlp.hpp"
#include "../common/fp8_qkv_linear.hpp"
#include "../common/gelu_mlp.hpp"
#include "../common/layer_norm.hpp"
#include "../common/qkv_split.hpp"

#include <dshost/model.hpp>
#include <dshost/ops/attention.hpp>

#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cctype>
#include <cstring>
#include <memory>
#include <vector>

namespace nn = torch::nn;

namespace {

const dshost_option kOptions[] = {
    DSHOST_OPTION("preset", DSHOST_OPTION_STRING, "\"custom\"",
                  "custom|gpt2-124m|gpt2-350m|gpt2-774m|gpt-1.3b",
                  "a named shape that sets n_layer, n_head and n_embd (custom: those keys)"),
    DSHOST_OPTION_RANGE("n_layer", DSHOST_OPTION_INT, "12", 1, 1000, "transformer blocks"),
    DSHOST_OPTION_RANGE("n_head", DSHOST_OPTION_INT, "12", 1, 1000, "attention heads per block"),
    DSHOST_OPTION_RANGE("n_embd", DSHOST_OPTION_INT, "768", 1, 65536,
                        "model width, a multiple of n_head"),
    DSHOST_OPTION_RANGE("vocab_size", DSHOST_OPTION_INT, "50257", 2, 10000000,
                        "token ids (50257: GPT-2's BPE; 256 for bytes of text)"),
    DSHOST_OPTION_RANGE("block_size", DSHOST_OPTION_INT, "1024", 1, 1000000,
                        "sequence length: tokens per sample"),
    DSHOST_OPTION_RANGE("dropout", DSHOST_OPTION_FLOAT, "0.0", 0.0, 0.95,
                        "dropout on embeddings, attention output and MLP output"),
    DSHOST_OPTION("activation_checkpointing", DSHOST_OPTION_BOOL, "false", nullptr,
                  "keep only each block's input and run the block again in backward: a "
                  "fraction of the activation memory for about a third more compute"),
    DSHOST_OPTION("fp8_scaling", DSHOST_OPTION_STRING, "\"delayed\"", "current|delayed",
                  "under train.precision = \"fp8\", each matrix scaled by its own largest "
                  "magnitude (a pass over it before the cast) or by the largest of its last 16 "
                  "casts (Transformer Engine's delayed scaling: no such pass)"),
    DSHOST_OPTION("fp8_output", DSHOST_OPTION_BOOL, "false", nullptr,
                  "under train.precision = \"fp8\", the tied output projection in fp8 too (its "
                  "logits' gradient in e5m2); off, as torchtitan's float8 keeps the last layer "
                  "in bf16, where the loss is most sensitive to rounding"),
};

struct Shape {
  int64_t layers, heads, width;
};

Shape shape_of(const dshost::Services& s) {
  const std::string preset = s.get_string("preset");
  if (preset == "gpt2-124m") return {12, 12, 768};
  if (preset == "gpt2-350m") return {24, 16, 1024};
  if (preset == "gpt2-774m") return {36, 20, 1280};
  if (preset == "gpt-1.3b") return {24, 16, 2048};
  return {s.get_int("n_layer"), s.get_int("n_head"), s.get_int("n_embd")};
}

// How a block's linear layers multiply: in bf16, or in fp8 scaled by each matrix's current
// largest magnitude or by its recent ones (model.fp8_scaling; fp8_linear.hpp).
enum class Precision { bf16, fp8_current, fp8_delayed };

// nn::LayerNorm computing through layer_norm.hpp: in bf16 when its input is bf16, by
// dshost's kernels on a GPU, and with the residual add before it fused in.
struct NormImpl : nn::LayerNormImpl {
  using nn::LayerNormImpl::LayerNormImpl;
  at::Tensor forward(const at::Tensor& x) {
    return dshost_models::layer_norm(x, weight, bias, options.eps());
  }
  // (x, its layer norm), x's gradient from its other uses added in the layer norm's backward.
  std::pair<at::Tensor, at::Tensor> forward_with_input(const at::Tensor& x) {
    return dshost_models::layer_norm_with_input(x, weight, bias, options.eps());
  }
  // (x + residual, its layer norm).
  std::pair<at::Tensor, at::Tensor> add_forward(const at::Tensor& x, const at::Tensor& residual) {
    return dshost_models::add_layer_norm(x, residual, weight, bias, options.eps());
  }
};
TORCH_MODULE(Norm);

struct EmbedImpl : nn::Module {
  EmbedImpl(int64_t vocab, int64_t block, int64_t width, double dropout)
      : wte(register_module("wte", nn::Embedding(vocab, width))),
        wpe(register_module("wpe", nn::Embedding(block, width))),
        drop(register_module("drop", nn::Dropout(dropout))) {}
  at::Tensor forward(const at::Tensor& tokens) {  // [B, T] -> [B, T, width]
    const at::Tensor positions = at::arange(tokens.size(1), tokens.options());
    return drop->forward(wte->forward(tokens) + wpe->forward(positions));
  }
  nn::Embedding wte, wpe;
  nn::Dropout drop;
};
TORCH_MODULE(Embed);

// h = x + attn(ln_1(x)), then h + mlp(ln_2(h)); the first residual add is ln_2's, and x's
// two gradients are added in ln_1's backward.
struct BlockImpl : nn::Module {
  BlockImpl(int64_t width, int64_t heads, double dropout, Precision precision)
      : heads(heads),
        precision(precision),
        ln_1(register_module("ln_1", Norm(nn::LayerNormOptions({width})))),
        c_attn(register_module("c_attn", nn::Linear(width, 3 * width))),
        attn_proj(register_module("attn_proj", nn::Linear(width, width))),
        ln_2(register_module("ln_2", Norm(nn::LayerNormOptions({width})))),
        c_fc(register_module("c_fc", nn::Linear(width, 4 * width))),
        mlp_proj(register_module("mlp_proj", nn::Linear(4 * width, width))),
        drop(register_module("drop", nn::Dropout(dropout))) {}

  at::Tensor forward(const at::Tensor& x) {
    const int64_t b = x.size(0), t = x.size(1), c = x.size(2);
    // q, k and v, each seen as [B, heads, T, C / heads].
    const auto [input, normed_input] = ln_1->forward_with_input(x);
    const std::vector<at::Tensor> qkv = attention_input(normed_input);
    const at::Tensor y = dshost::causal_attention(qkv[0].transpose(1, 2), qkv[1].transpose(1, 2),
                                                  qkv[2].transpose(1, 2))
                             .transpose(1, 2)
                             .reshape({b, t, c});
    const auto [h, normed] = ln_2->add_forward(input, drop->forward(linear(1, attn_proj, y)));
    if (drop->options.p() > 0) return h + drop->forward(mlp(normed, {}));
    return mlp(normed, h);
  }

  // c_attn's output [B, T, 3C] as q, k and v, three [B, T, heads, C / heads] views. Split by
  // dimension 2 before the transposes, so that backward stacks the three gradients into a
  // [B, T, 3C] in one copy (qkv_split.hpp, which sums c_attn's bias gradient in the same
  // pass); in fp8, backward casts them where they lie instead, with no copy
  // (fp8_qkv_linear.hpp).
  std::vector<at::Tensor> attention_input(const at::Tensor& x) {
    if (precision == Precision::bf16)
      return dshost_models::split_qkv(x, c_attn->weight, c_attn->bias, heads);
    return dshost_models::fp8_qkv_linear(
        x, c_attn->weight, c_attn->bias, heads,
        precision == Precision::fp8_delayed ? &fp8_scaling[0] : nullptr);
  }

  // residual + mlp_proj(GELU(c_fc(x))), without the residual where it is undefined: in bf16
  // with GELU and its derivative, and the residual, in cuBLASLt's epilogues (gelu_mlp.hpp), in
  // fp8 with GELU inside the casts between the layers.
  at::Tensor mlp(const at::Tensor& x, const at::Tensor& residual) {
    if (precision == Precision::bf16)
      return dshost_models::gelu_mlp(x, c_fc->weight, c_fc->bias, mlp_proj->weight, mlp_proj->bias,
                                     residual);
    const bool delayed = precision == Precision::fp8_delayed;
    const at::Tensor out = dshost_models::fp8_gelu_mlp(
        x, c_fc->weight, c_fc->bias, mlp_proj->weight, mlp_proj->bias,
        {delayed ? &fp8_scaling[2] : nullptr, delayed ? &fp8_scaling[3] : nullptr});
    return residual.defined() ? residual + out : out;
  }

  // The block's layer i (c_attn, attn_proj, c_fc, mlp_proj) on x. bf16_linear fuses the
  // bias into the GEMM, as ATen's linear (and Python's nn.Linear) does, where the C++
  // frontend's nn::Linear adds it in a kernel of its own, adds the weight's gradient
  // straight into the strategy's buffer, and sums the bias's in the same product.
  at::Tensor linear(int i, const nn::Linear& layer, const at::Tensor& x) {
    if (precision == Precision::bf16)
      return dshost_models::bf16_linear(x, layer->weight, layer->bias);
    return dshost_models::fp8_linear(
        x, layer->weight, layer->bias,
        {precision == Precision::fp8_delayed ? &fp8_scaling[i] : nullptr});
  }

  int64_t heads;
  Precision precision;
  dshost_models::Fp8Scaling fp8_scaling[4];
  Norm ln_1;
  nn::Linear c_attn, attn_proj;
  Norm ln_2;
  nn::Linear c_fc, mlp_proj;
  nn::Dropout drop;
};
TORCH_MODULE(Block);

class Gpt : public dshost::Model {
 public:
  explicit Gpt(const dshost::Services& s)
      : Model(s),
        shape_(shape_of(s)),
        vocab_(s.get_int("vocab_size")),
        block_(s.get_int("block_size")),
        fp8_(s.fp8() && dshost_models::kFp8Built && shape_.width % 16 == 0),
        fp8_output_(fp8_ && s.get_bool("fp8_output") && vocab_ % 16 == 0),
        output_scaling_(fp8_output_ && precision(s) == Precision::fp8_delayed
                            ? std::make_unique<dshost_models::Fp8Scaling>()
                            : nullptr) {
    if (shape_.width % shape_.heads != 0)
      throw dshost::Error("model.n_embd = " + std::to_string(shape_.width) +
                          " is not a multiple of model.n_head = " + std::to_string(shape_.heads));
    const double dropout = s.get_float("dropout");
    embed_ = add_unit("embed", Embed(vocab_, block_, shape_.width, dropout));
    for (int64_t l = 0; l < shape_.layers; ++l)
      add_unit("h" + std::to_string(l), Block(shape_.width, shape_.heads, dropout, precision(s)));
    add_unit("head", Norm(nn::LayerNormOptions({shape_.width})));
    init_weights();
    if (s.get_bool("activation_checkpointing"))
      checkpoint_activations(/*replay_random=*/dropout > 0);
    if (fp8_ && s.rank() == 0) s.info(fp8_summary(s));
  }

  // The run's line on its fp8 layers: which, how they are scaled, and why the output
  // projection stayed in bf16 where model.fp8_output asked for fp8.
  std::string fp8_summary(const dshost::Services& s) const {
    std::string line =
        "fp8 matrix multiplies in " + std::to_string(fp8_layers()) +
        " linear layers (four a block" + (fp8_output_ ? " and the output projection), " : "), ") +
        s.get_string("fp8_scaling") + " scaling; embeddings, layer norms, attention" +
        (fp8_output_ ? "" : ", the output projection") + " and the loss in bf16";
    if (s.get_bool("fp8_output") && !fp8_output_)
      line += " (model.fp8_output: vocab_size " + std::to_string(vocab_) +
              " is no multiple of 16; pad it, as GPT-2's 50257 to 50304)";
    return line;
  }

  Precision precision(const dshost::Services& s) const {
    if (!fp8_) return Precision::bf16;
    return s.get_string("fp8_scaling") == "delayed" ? Precision::fp8_delayed
                                                    : Precision::fp8_current;
  }

  std::vector<int64_t> input_shape() const override { return {block_}; }
  at::ScalarType input_dtype() const override { return at::kLong; }
  std::vector<int64_t> target_shape() const override { return {block_}; }
  // Under fp8, each block's four linear layers, and the tied output projection where
  // model.fp8_output asks for it and the vocabulary is a multiple of 16. A width that is no
  // multiple of 16 leaves every layer in bf16.
  int fp8_layers() const override {
    return fp8_ ? 4 * static_cast<int>(shape_.layers) + (fp8_output_ ? 1 : 0) : 0;
  }

  // Per sequence of block_size tokens: 2 FLOPs per weight of every matrix multiply per token
  // (12 x width^2 per block, and the tied output projection), plus q k^T and (attention) v
  // (2 x T x width each per block per token).
  int64_t forward_flops_per_sample() const override {
    const int64_t c = shape_.width, t = block_;
    return 2 * t * (shape_.layers * 12 * c * c + c * vocab_) + 4 * shape_.layers * t * t * c;
  }
  // Units: embed (a lookup: none), each block, head (the tied output projection).
  int64_t unit_forward_flops(int unit) const override {
    const int64_t c = shape_.width, t = block_;
    if (unit == 0) return 0;
    if (unit <= shape_.layers) return 2 * t * 12 * c * c + 4 * t * t * c;
    return 2 * t * c * vocab_;
  }

  at::Tensor forward(const at::Tensor& tokens) override {
    const auto& s = services();
    s.unit_event(DSHOST_PRE_FORWARD, 0);  // no post_forward: the head reuses wte
    at::Tensor x = embed_->forward(tokens);
    if (x.requires_grad())
      x.register_hook([s](const at::Tensor& g) {
        s.unit_event(DSHOST_PRE_BACKWARD, 0);
        return g;
      });
    for (size_t u = 1; u < units().size(); ++u) x = run_unit(u, x);
    // [B, T, vocab]. wte is tied, so autograd sums both of its gradients: none goes into the
    // strategy's buffer before the embedding's.
    if (fp8_output_)
      return dshost_models::fp8_linear(x, embed_->wte->weight, {},
                                       {output_scaling_.get(), /*weight_into_buffer=*/false});
    return at::linear(x, embed_->wte->weight);
  }

  // Hugging Face's GPT2Model names ("h.0.attn.c_attn.weight"), as its model.safetensors holds
  // them: what `dshost export` writes and model.init_from reads.
  std::string export_name(const std::string& name) const override {
    static const std::pair<const char*, const char*> kPlaces[] = {
        {"embed.", ""},           {".c_attn.", ".attn.c_attn."},  {".attn_proj.", ".attn.c_proj."},
        {".c_fc.", ".mlp.c_fc."}, {".mlp_proj.", ".mlp.c_proj."}, {"head.", "ln_f."}};
    std::string out = name;
    if (in_block(name)) out.insert(1, ".");
    for (const auto& [ours, theirs] : kPlaces) {
      const size_t at = out.find(ours);
      if (at != std::string::npos && (at == 0 || ours[0] == '.'))
        return out.replace(at, std::strlen(ours), theirs);
    }
    return out;
  }
  // Its Conv1D keeps the blocks' projection weights as [in, out].
  bool export_transposed(const std::string& name) const override {
    return in_block(name) && name.find(".ln_") == std::string::npos &&
           name.compare(name.size() - 7, 7, ".weight") == 0;
  }

  at::Tensor loss(const at::Tensor& logits, const at::Tensor& targets) override {
    return dshost_models::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                        targets.reshape({-1}));
  }

 private:
  // GPT-2's: normal(0, 0.02) weights, zero biases, the residual projections scaled by
  // 1 / sqrt(2 x layers).
  void init_weights() {
    at::NoGradGuard no_grad;
    for (auto& item : named_parameters()) {
      at::Tensor& p = item.value();
      if (item.key().find("ln_") != std::string::npos || item.key().rfind("head.", 0) == 0)
        continue;
      if (item.key().size() > 5 && item.key().compare(item.key().size() - 5, 5, ".bias") == 0) {
        p.zero_();
        continue;
      }
      const bool residual = item.key().find("_proj.weight") != std::string::npos;
      p.normal_(0.0, residual ? 0.02 / std::sqrt(2.0 * shape_.layers) : 0.02);
    }
  }

  // Whether parameter `name` is a block's ("h12.c_fc.weight").
  static bool in_block(const std::string& name) {
    return name.size() > 1 && name[0] == 'h' && std::isdigit(static_cast<unsigned char>(name[1]));
  }

  const Shape shape_;
  const int64_t vocab_, block_;
  const bool fp8_, fp8_output_;
  const std::unique_ptr<dshost_models::Fp8Scaling> output_scaling_;  // delayed scaling only
  Embed embed_{nullptr};
};

}  // namespace

DSHOST_MODEL_PLUGIN(Gpt, "gpt", "1.0.0", "a GPT-2-style decoder-only transformer", kOptions,
                    sizeof(kOptions) / sizeof(kOptions[0]))
