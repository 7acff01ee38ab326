#include "core/torch_pickle.h"

#include "core/error.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <vector>

namespace dshost {
namespace {

// A value on the pickle machine's stack.
struct Obj;
using ObjPtr = std::shared_ptr<Obj>;
struct Obj {
  enum Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kTensor, kMark };
  Kind kind = kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;              // a string, or a global's "module.name"
  std::vector<ObjPtr> items;  // a tuple's or list's; a dict's keys and values in turn
  at::Tensor tensor;
};

// How torch.save's legacy format begins: pickle protocol 2 of its magic number,
// 0x1950a86a20f9469cfc6c, which fits no int64.
constexpr char kLegacyMagic[] =
    "\x80\x02\x8a\x0a"
    "l\xfc\x9c"
    "F\xf9 j\xa8"
    "P\x19.";

enum class SavedFormat { kZip, kLegacy, kNeither };

// Which of torch.save's formats the file at `path` starts as.
SavedFormat saved_format(const std::string& path) {
  char start[sizeof(kLegacyMagic) - 1] = {};
  std::ifstream(path, std::ios::binary).read(start, sizeof(start));
  if (std::memcmp(start, "PK\x03\x04", 4) == 0) return SavedFormat::kZip;
  if (std::memcmp(start, kLegacyMagic, sizeof(start)) == 0) return SavedFormat::kLegacy;
  return SavedFormat::kNeither;
}

ObjPtr make(Obj::Kind kind) {
  auto o = std::make_shared<Obj>();
  o->kind = kind;
  return o;
}

at::ScalarType storage_dtype(const std::string& global) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"torch.FloatStorage", at::kFloat}, {"torch.DoubleStorage", at::kDouble},
      {"torch.HalfStorage", at::kHalf},   {"torch.BFloat16Storage", at::kBFloat16},
      {"torch.LongStorage", at::kLong},   {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort}, {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},   {"torch.BoolStorage", at::kBool}};
  const auto found = kTypes.find(global);
  if (found == kTypes.end()) throw std::runtime_error("a storage of type " + global);
  return found->second;
}

// A storage's elements by its key: read from a zip's data/KEY, or made empty for a legacy
// stream to fill once its storages follow the pickle. The same key gives the same storage.
using StorageSource =
    std::function<at::Tensor(const std::string& key, at::ScalarType dtype, int64_t numel)>;

class Machine {
 public:
  Machine(StorageSource storages, const char* data, size_t size)
      : storages_(std::move(storages)), p_(data), end_(data + size) {}

  // Runs one pickle (to its STOP) and returns what it built.
  ObjPtr run() {
    for (;;) {
      const uint8_t op = byte();
      if (op == '.') return pop();
      step(op);
    }
  }
  // Where the next pickle of the stream starts.
  const char* end_of_pickle() const { return p_; }

 private:
  void step(uint8_t op) {
    switch (op) {
      case 0x80:
        byte();
        return;  // PROTO
      case 0x95:
        bytes(8);
        return;  // FRAME
      case '(':
        push(make(Obj::kMark));
        return;  // MARK
      case 'N':
        push(make(Obj::kNone));
        return;
      case 0x88:
      case 0x89:
        push(boolean(op == 0x88));
        return;  // NEWTRUE, NEWFALSE
      case 'K':
        push(integer(byte()));
        return;  // BININT1
      case 'M':
        push(integer(little(2)));
        return;  // BININT2
      case 'J':
        push(integer(static_cast<int32_t>(little(4))));
        return;  // BININT
      case 0x8a:
        push(integer(long1()));
        return;  // LONG1
      case 'G':
        push(real());
        return;  // BINFLOAT
      case 'X':
        push(string(little(4)));
        return;  // BINUNICODE
      case 0x8c:
      case 'U':
        push(string(byte()));
        return;  // SHORT_BINUNICODE, SHORT_BINSTRING
      case 'c':
        push(global());
        return;  // GLOBAL
      case '}':
        push(make(Obj::kDict));
        return;  // EMPTY_DICT
      case ']':
        push(make(Obj::kList));
        return;  // EMPTY_LIST
      case ')':
        push(make(Obj::kTuple));
        return;  // EMPTY_TUPLE
      case 't':
        push(tuple(to_mark()));
        return;  // TUPLE
      case 0x85:
      case 0x86:
      case 0x87:
        push(tuple(pop_n(op - 0x84)));
        return;  // TUPLE1-3
      case 'q':
        memo_[byte()] = top();
        return;  // BINPUT
      case 'r':
        memo_[little(4)] = top();
        return;  // LONG_BINPUT
      case 0x94:
        memo_[memo_.size()] = top();
        return;  // MEMOIZE
      case 'h':
        push(memo(byte()));
        return;  // BINGET
      case 'j':
        push(memo(little(4)));
        return;  // LONG_BINGET
      case 'Q':
        push(storage(pop()));
        return;  // BINPERSID
      case 'R': {
        const ObjPtr args = pop();
        push(reduce(pop(), args));
        return;
      }
      case 's': {
        const ObjPtr v = pop(), k = pop();
        set_items(top(), {k, v});
        return;
      }
      case 'u': {
        auto kv = to_mark();
        set_items(top(), kv);
        return;
      }
      case 'a': {
        const ObjPtr v = pop();
        top()->items.push_back(v);
        return;
      }
      case 'e': {
        auto vs = to_mark();
        auto& l = top()->items;
        l.insert(l.end(), vs.begin(), vs.end());
        return;
      }
      case 0x81: {  // NEWOBJ: an instance of a class, which no state_dict holds
        pop();
        throw std::runtime_error("an object of class " + pop()->s + ", not a state_dict");
      }
      case 'b':
        pop();
        return;  // BUILD: an OrderedDict's _metadata, not needed
      default:
        throw std::runtime_error(cat("pickle opcode 0x", std::hex, static_cast<int>(op)));
    }
  }

  uint8_t byte() {
    need(1);
    return static_cast<uint8_t>(*p_++);
  }
  std::string bytes(size_t n) {
    need(n);
    std::string out(p_, n);
    p_ += n;
    return out;
  }
  uint64_t little(int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(byte()) << (8 * k);
    return v;
  }
  int64_t long1() {
    const int n = byte();
    if (n > 8) throw std::runtime_error("an integer of more than 64 bits");
    uint64_t v = little(n);
    if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign
    return static_cast<int64_t>(v);
  }
  void need(size_t n) const {
    if (static_cast<size_t>(end_ - p_) < n) throw std::runtime_error("the pickle ends early");
  }
  std::string line() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', end_ - p_));
    if (nl == nullptr) throw std::runtime_error("the pickle ends early");
    std::string out(p_, nl);
    p_ = nl + 1;
    return out;
  }

  ObjPtr integer(int64_t v) {
    ObjPtr o = make(Obj::kInt);
    o->i = v;
    return o;
  }
  ObjPtr boolean(bool v) {
    ObjPtr o = make(Obj::kBool);
    o->i = v;
    return o;
  }
  ObjPtr real() {
    uint64_t bits = 0;
    for (int k = 0; k < 8; ++k) bits = bits << 8 | byte();  // big-endian
    ObjPtr o = make(Obj::kFloat);
    std::memcpy(&o->f, &bits, sizeof bits);
    return o;
  }
  ObjPtr string(size_t n) {
    ObjPtr o = make(Obj::kString);
    o->s = bytes(n);
    return o;
  }
  ObjPtr global() {
    const std::string module = line();
    ObjPtr o = make(Obj::kGlobal);
    o->s = module + "." + line();
    return o;
  }
  ObjPtr tuple(std::vector<ObjPtr> items) {
    ObjPtr o = make(Obj::kTuple);
    o->items = std::move(items);
    return o;
  }
  ObjPtr memo(uint64_t key) const {
    const auto found = memo_.find(key);
    if (found == memo_.end()) throw std::runtime_error("a memo entry that was never put");
    return found->second;
  }

  void push(ObjPtr o) { stack_.push_back(std::move(o)); }
  ObjPtr top() const {
    if (stack_.empty()) throw std::runtime_error("an empty stack");
    return stack_.back();
  }
  ObjPtr pop() {
    ObjPtr o = top();
    stack_.pop_back();
    return o;
  }
  std::vector<ObjPtr> pop_n(size_t n) {
    if (stack_.size() < n) throw std::runtime_error("an empty stack");
    std::vector<ObjPtr> out(stack_.end() - static_cast<int64_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<ObjPtr> to_mark() {
    size_t m = stack_.size();
    while (m > 0 && stack_[m - 1]->kind != Obj::kMark) --m;
    if (m == 0) throw std::runtime_error("no mark on the stack");
    std::vector<ObjPtr> out(stack_.begin() + static_cast<int64_t>(m), stack_.end());
    stack_.resize(m - 1);
    return out;
  }
  static void set_items(const ObjPtr& dict, const std::vector<ObjPtr>& kv) {
    if (dict->kind != Obj::kDict) throw std::runtime_error("items set on something not a dict");
    dict->items.insert(dict->items.end(), kv.begin(), kv.end());
  }

  // ('storage', torch.FloatStorage, KEY, LOCATION, NUMEL[, VIEW]).
  ObjPtr storage(const ObjPtr& pid) {
    const auto& t = pid->items;
    if (pid->kind != Obj::kTuple || t.size() < 5 || t[0]->s != "storage")
      throw std::runtime_error("a persistent object that is not a storage");
    ObjPtr o = make(Obj::kTensor);
    o->tensor = storages_(t[2]->s, storage_dtype(t[1]->s), t[4]->i);
    return o;
  }

  static std::vector<int64_t> ints(const ObjPtr& tuple) {
    std::vector<int64_t> out;
    for (const ObjPtr& v : tuple->items) out.push_back(v->i);
    return out;
  }

  static ObjPtr reduce(const ObjPtr& callable, const ObjPtr& args) {
    const std::string& f = callable->s;
    if (f == "collections.OrderedDict") return make(Obj::kDict);
    const auto& a = args->items;
    if (f == "torch._utils._rebuild_tensor_v2" && a.size() >= 4 && a[0]->kind == Obj::kTensor) {
      ObjPtr o = make(Obj::kTensor);
      o->tensor = a[0]->tensor.as_strided(ints(a[2]), ints(a[3]), a[1]->i);
      return o;
    }
    if (f == "torch._utils._rebuild_parameter" && !a.empty() && a[0]->kind == Obj::kTensor)
      return a[0];
    throw std::runtime_error("an object made by " + f + " (a state_dict holds tensors only)");
  }

  StorageSource storages_;
  const char* p_;
  const char* end_;
  std::vector<ObjPtr> stack_;
  std::map<uint64_t, ObjPtr> memo_;
};

// The named tensors of a state_dict the machine built.
std::map<std::string, at::Tensor> named(const ObjPtr& dict) {
  if (dict->kind != Obj::kDict) throw std::runtime_error("a pickle that is not a dict");
  std::map<std::string, at::Tensor> tensors;
  for (size_t k = 0; k + 1 < dict->items.size(); k += 2) {
    const ObjPtr &name = dict->items[k], &value = dict->items[k + 1];
    if (name->kind != Obj::kString || value->kind != Obj::kTensor)
      throw std::runtime_error("a dict entry that is not a named tensor");
    tensors[name->s] = value->tensor;
  }
  return tensors;
}

// torch.save's zip (PyTorch 1.6 and later): ARCHIVE/data.pkl, each storage in ARCHIVE/data/KEY.
std::map<std::string, at::Tensor> read_zip(const std::string& path) {
  caffe2::serialize::PyTorchStreamReader archive(path);
  std::map<std::string, at::Tensor> storages;
  const auto from_archive = [&](const std::string& key, at::ScalarType dtype, int64_t numel) {
    at::Tensor& s = storages[key];
    if (s.defined()) return s;
    auto [data, size] = archive.getRecord("data/" + key);
    if (static_cast<int64_t>(size) < numel * static_cast<int64_t>(c10::elementSize(dtype)))
      throw std::runtime_error("storage " + key + " is shorter than its elements");
    s = at::empty({numel}, dtype);
    std::memcpy(s.data_ptr(), data.get(), numel * c10::elementSize(dtype));
    return s;
  };
  auto [data, size] = archive.getRecord("data.pkl");
  return named(Machine(from_archive, static_cast<const char*>(data.get()), size).run());
}

// The legacy format (before PyTorch 1.6; torchvision's older downloads): one stream of the
// magic number, the protocol version and the system's sizes (three small pickles), the
// state_dict's pickle, the pickle of its storages' keys, then each of those storages as an
// int64 element count and the elements. The caller has seen the magic number.
std::map<std::string, at::Tensor> read_legacy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string stream((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const char* p = stream.data() + sizeof(kLegacyMagic) - 1;
  const char* const end = stream.data() + stream.size();
  std::map<std::string, at::Tensor> storages;
  const auto empty = [&](const std::string& key, at::ScalarType dtype, int64_t numel) {
    at::Tensor& s = storages[key];
    if (!s.defined()) s = at::empty({numel}, dtype);
    return s;
  };
  const auto next = [&](const StorageSource& source) {
    Machine m(source, p, static_cast<size_t>(end - p));
    ObjPtr built = m.run();
    p = m.end_of_pickle();
    return built;
  };
  const StorageSource none = [](const std::string&, at::ScalarType, int64_t) -> at::Tensor {
    throw std::runtime_error("a storage outside the state_dict");
  };
  next(none);  // the protocol version
  next(none);  // the system's sizes
  const std::map<std::string, at::Tensor> tensors = named(next(empty));
  const ObjPtr keys = next(none);
  for (const ObjPtr& key : keys->items) {
    const at::Tensor& s = storages.at(key->s);
    int64_t numel = 0;
    const int64_t bytes = s.numel() * static_cast<int64_t>(s.element_size());
    if (end - p < 8 + bytes) throw std::runtime_error("the file ends early");
    std::memcpy(&numel, p, 8);
    if (numel != s.numel()) throw std::runtime_error("storage " + key->s + " has another size");
    std::memcpy(s.data_ptr(), p + 8, bytes);
    p += 8 + bytes;
  }
  return tensors;
}

}  // namespace

bool is_torch_save_file(const std::string& path) {
  return saved_format(path) != SavedFormat::kNeither;
}

std::map<std::string, at::Tensor> read_torch_state_dict(const std::string& path) {
  std::map<std::string, at::Tensor> tensors;
  try {
    switch (saved_format(path)) {
      case SavedFormat::kZip:
        tensors = read_zip(path);
        break;
      case SavedFormat::kLegacy:
        tensors = read_legacy(path);
        break;
      case SavedFormat::kNeither:
        throw std::runtime_error("neither torch.save's zip nor its legacy format");
    }
  } catch (const std::exception& e) {
    throw UserError(cat(path, ": not a state_dict saved by torch.save that dshost can read (",
                        without_backtrace(e.what()),
                        "); save the model's state_dict(), or write safetensors"));
  }
  return tensors;
}

}  // namespace dshost
