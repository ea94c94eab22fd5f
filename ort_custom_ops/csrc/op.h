// The one op framework every precision's ops share (fp32 Fused*, fp16 Fp16Fused*, bf16 Bf16Fused*, int8 Q*;
// CPU and CUDA):
//   Op<Kernel, Signature>  the ONNX Runtime custom op: input/output types from the signature, the kernel
//                          made and its attributes read and checked once, when ONNX Runtime creates it;
//   Attributes             the attribute reader: remembers the first problem, and refuses a name the op
//                          vocabulary (vocabulary.h) does not declare for the op;
//   Printable, Error, NodeName, StaticShape, Guarded, OrtParallelFor: a message made printable UTF-8,
//                          one error prefix ("FCM node '<name>': "), the node's name, a static input
//                          shape, exceptions turned into a status, and ONNX Runtime's thread pool as a
//                          ParallelFor.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "parallel_for.h"
#include "vocabulary.h"

namespace fcm {

// `text` as valid UTF-8 without control characters: any other byte as \xNN. Error messages quote
// attribute values and node names from the model, and ONNX Runtime's Python binding cannot decode
// a message that is not UTF-8 (it raises UnicodeDecodeError instead of the error).
inline std::string Printable(const std::string& text) {
  std::string out;
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = byte(i);
    // the length of a well-formed UTF-8 sequence starting here (RFC 3629: no overlong forms,
    // surrogates or code points past U+10FFFF), 0 if none
    size_t length = c >= 0x20 && c < 0x7f ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (length > 1) {
      if (i + length > text.size()) length = 0;
      for (size_t k = 1; k < length; ++k)
        if ((byte(i + k) & 0xc0) != 0x80) length = 0;
      if (length == 3 && ((c == 0xe0 && byte(i + 1) < 0xa0) || (c == 0xed && byte(i + 1) > 0x9f))) length = 0;
      if (length == 4 && ((c == 0xf0 && byte(i + 1) < 0x90) || (c == 0xf4 && byte(i + 1) > 0x8f))) length = 0;
    }
    if (length == 0) {
      static const char kHex[] = "0123456789abcdef";
      out += {'\\', 'x', kHex[c >> 4], kHex[c & 15]};
      ++i;
    } else {
      out.append(text, i, length);
      i += length;
    }
  }
  return out;
}

inline Ort::Status Error(const std::string& node, const std::string& what) {
  return Ort::Status(Printable("FCM node '" + node + "': " + what).c_str(), ORT_INVALID_ARGUMENT);
}

// The node's name, or `fallback` when it has none.
inline std::string NodeName(const Ort::ConstKernelInfo& info, const std::string& fallback) {
  try {
    const std::string name = info.GetNodeName();
    if (!name.empty()) return name;
  } catch (const Ort::Exception&) {
  }
  return fallback;
}

// A shape as "[2, 3, 4]", for error messages.
inline std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// The static shape of input `index` at kernel creation ({} when unknown).
inline std::vector<int64_t> StaticShape(const Ort::ConstKernelInfo& info, size_t index) {
  try {
    return info.GetInputTypeInfo(index).GetTensorTypeAndShapeInfo().GetShape();
  } catch (const Ort::Exception&) {
    return {};
  }
}

// Runs `body` (returning an Ort::Status), turning exceptions into a status for ONNX Runtime.
template <typename F>
OrtStatusPtr Guarded(F&& body) {
  try {
    Ort::Status status = body();
    return status.IsOK() ? nullptr : status.release();
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::exception& e) {
    return Ort::Status(Printable(e.what()).c_str(), ORT_RUNTIME_EXCEPTION).release();
  }
}

// ONNX Runtime's thread pool as a ParallelFor (valid while `ctx` is).
inline ParallelFor OrtParallelFor(Ort::KernelContext& ctx) {
  return [&ctx](size_t count, const std::function<void(size_t)>& work) {
    auto trampoline = [](void* data, size_t i) { (*static_cast<const std::function<void(size_t)>*>(data))(i); };
    ctx.ParallelFor(trampoline, count, 0, const_cast<std::function<void(size_t)>*>(&work));
  };
}

// Reads a node's attributes, remembering the first problem (a missing or invalid attribute). Every name
// read must be one the vocabulary declares for `op`: reading another is a problem too, so the C++ ops
// and the Python schema cannot drift apart unnoticed.
class Attributes {
 public:
  Attributes(const Ort::ConstKernelInfo& info, const std::string& op) : info_(info) {
    for (const auto& entry : vocabulary::kOpAttributes) {
      if (op == entry.op) declared_ = &entry;
    }
    if (declared_ == nullptr) Fail("op type " + op + " is not in the op vocabulary");
  }

  const std::string& problem() const { return problem_; }
  void Fail(const std::string& what) {
    if (problem_.empty()) problem_ = what;
  }

  // Whether the vocabulary declares `name` for this op (asking is no problem).
  bool Declares(const std::string& name) const {
    if (declared_ == nullptr) return false;
    for (size_t i = 0; i < declared_->count; ++i) {
      if (name == declared_->names[i]) return true;
    }
    return false;
  }

  // An optional attribute: false (and *out untouched) when the node does not carry it.
  template <typename T>
  bool TryRead(const std::string& name, T* out) {
    if (!Declared(name)) return false;
    try {
      *out = Get(name.c_str(), out);
      return true;
    } catch (const Ort::Exception&) {
      return false;
    }
  }
  // A required attribute: a missing one is the problem.
  template <typename T>
  bool Read(const std::string& name, T* out) {
    if (TryRead(name, out)) return true;
    Fail("missing attribute " + name);
    return false;
  }
  int64_t Int(const std::string& name, int64_t fallback) {
    int64_t v = fallback;
    TryRead(name, &v);
    return v;
  }
  // `fallback.size()` integers, each at least `least`: `fallback` where the node does not carry the
  // attribute (then a problem if `required`) or where its values are not that (a problem).
  std::vector<int64_t> Ints(const std::string& name, std::vector<int64_t> fallback, int64_t least = kAnyInt, bool required = false) {
    std::vector<int64_t> v;
    if (!(required ? Read(name, &v) : TryRead(name, &v))) return fallback;
    bool ok = v.size() == fallback.size();
    for (int64_t x : v) ok = ok && x >= least;
    if (ok) return v;
    std::string what = name + " must hold " + std::to_string(fallback.size()) + " integers";
    if (least != kAnyInt) what += " of at least " + std::to_string(least);
    Fail(what + ", not " + ShapeText(v));
    return fallback;
  }
  static constexpr int64_t kAnyInt = INT64_MIN;
  // 0 or 1 (default 0).
  bool Flag(const std::string& name) {
    const int64_t v = Int(name, 0);
    if (v != 0 && v != 1) Fail(name + " must be 0 or 1");
    return v == 1;
  }

 private:
  template <typename T>
  T Get(const char* name, T*) const {
    return info_.GetAttribute<T>(name);
  }
  template <typename T>
  std::vector<T> Get(const char* name, std::vector<T>*) const {
    return info_.GetAttributes<T>(name);
  }
  bool Declared(const std::string& name) {
    if (declared_ == nullptr) return false;
    if (Declares(name)) return true;
    Fail("attribute " + name + " is not in the op vocabulary of " + declared_->op);
    return false;
  }

  const Ort::ConstKernelInfo& info_;
  const vocabulary::OpAttributes* declared_ = nullptr;
  std::string problem_;
};

// One custom op class for every precision and provider. `Signature` gives the op's inputs and output
// (InputCount(stages), Optional(index, stages), InputType(index), kOutputType) and makes a kernel
// ready to run: Init(kernel, info, op_name, stages) reads and checks its attributes.
template <typename Kernel, typename Signature>
struct Op : Ort::CustomOpBase<Op<Kernel, Signature>, Kernel, /*WithStatus=*/true> {
  Op(const char* name, size_t stages, const char* provider) : name_(name), provider_(provider), stages_(stages) {}

  const char* GetName() const { return name_; }
  const char* GetExecutionProviderType() const { return provider_; }
  size_t GetInputTypeCount() const { return Signature::InputCount(stages_); }
  ONNXTensorElementDataType GetInputType(size_t index) const { return Signature::InputType(index); }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return Signature::Optional(index, stages_) ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                                               : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return Signature::kOutputType; }

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** op_kernel) const {
    auto kernel = std::make_unique<Kernel>();
    Ort::Status status(nullptr);
    try {
      status = Signature::Init(*kernel, Ort::ConstKernelInfo(info), name_, stages_);
    } catch (const Ort::Exception& e) {
      status = Ort::Status(e);
    } catch (const std::exception& e) {
      status = Ort::Status(e.what(), ORT_INVALID_ARGUMENT);
    }
    if (!status.IsOK()) return status.release();
    *op_kernel = kernel.release();
    return nullptr;
  }

 private:
  const char* name_;
  const char* provider_;
  size_t stages_;
};

}  // namespace fcm
