// loom_model_parity: runs Loom's dense InterFormer once (forward + backward) on a random batch
// and writes the three files of the reference-parity contract (docs/model.md §9,
// tests/reference/check_parity.py):
//   <out>/weights.safetensors   every parameter by name (F32) + metadata model_config (JSON,
//                               proto field names)
//   <out>/batch.safetensors     dense, sparse, seq.<j>, seq_mask, label
//   <out>/loom_out.safetensors  logits, loss, grad.<param>, grad.input.{sparse,seq.<j>,dense}
// Then: /usr/bin/python3 tests/reference/check_parity.py --weights ... --batch ... --loom ...
//
// Usage:
//   loom_model_parity --out DIR [--config model.pbtxt] [--set 'num_layers: 1'] ...
//                     [--batch 8] [--seq_len 10] [--seed 0] [--dtype f32|f64] [--no_perturb]
// --config is a ModelConfig in text format; each --set is text format too, applied in order
// (a repeated field in an override replaces the list). The batch follows the reference's
// random_batch: pre-padded sequences of mixed lengths with row 0 full, row 1 empty and row 2
// of length 1 (shorter than num_recent_tokens); padded positions hold random values too.
// Weights: the Philox init (seed), then, unless --no_perturb, N(0, 0.1²) noise added to every
// zero-initialized (bias) and one-initialized (LayerNorm gain) parameter so that every
// parameter is exercised (as check_parity.py --make-random does).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "csrc/core/logging.h"
#include "csrc/core/philox.h"
#include "csrc/core/rng.h"
#include "csrc/core/safetensors.h"
#include "csrc/model/interformer.h"
#include "csrc/model/model_config.h"
#include "csrc/proto/config_io.h"
#include "csrc/proto/model.pb.h"

namespace loom {
namespace {

struct Args {
  std::string out;
  std::string config;
  std::vector<std::string> sets;
  int64_t batch = 8;
  int64_t seq_len = 10;
  uint64_t seed = 0;
  DType dtype = DType::kF32;
  bool perturb = true;
};

void Usage() {
  std::fprintf(stderr,
               "usage: loom_model_parity --out DIR [--config model.pbtxt] [--set TEXT]... "
               "[--batch 8] [--seq_len 10] [--seed 0] [--dtype f32|f64] [--no_perturb]\n");
}

StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> StatusOr<std::string> {
      if (i + 1 >= argc) return InvalidArgumentError("missing value after " + k);
      return std::string(argv[++i]);
    };
    if (k == "--no_perturb") {
      a.perturb = false;
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(std::string v, value());
    if (k == "--out") {
      a.out = v;
    } else if (k == "--config") {
      a.config = v;
    } else if (k == "--set") {
      a.sets.push_back(v);
    } else if (k == "--batch") {
      a.batch = std::atoll(v.c_str());
    } else if (k == "--seq_len") {
      a.seq_len = std::atoll(v.c_str());
    } else if (k == "--seed") {
      a.seed = std::strtoull(v.c_str(), nullptr, 10);
    } else if (k == "--dtype") {
      LOOM_ASSIGN_OR_RETURN(a.dtype, ParseDType(v));
    } else {
      return InvalidArgumentError("unknown flag " + k);
    }
  }
  if (a.out.empty()) return InvalidArgumentError("--out is required");
  if (a.batch < 3) return InvalidArgumentError("--batch must be >= 3 (rows 0-2 are fixed cases)");
  return a;
}

// Host tensor of `shape` in dtype `dt` filled from doubles.
Tensor HostTensor(const std::vector<double>& v, const Shape& shape, DType dt) {
  Tensor t = Tensor::Empty(shape, dt);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dt == DType::kF32) {
      t.data<float>()[i] = static_cast<float>(v[i]);
    } else {
      t.data<double>()[i] = v[i];
    }
  }
  return t;
}

// Converts a host tensor to f32 (the weights/batch files are F32).
Tensor ToF32(ConstTensorView v) {
  Tensor t = Tensor::Empty(v.shape(), DType::kF32);
  for (int64_t i = 0; i < v.numel(); ++i) {
    t.data<float>()[i] =
        v.dtype() == DType::kF32 ? v.data<float>()[i] : static_cast<float>(v.data<double>()[i]);
  }
  return t;
}

Status Run(const Args& args) {
  proto::ModelConfig config;
  if (!args.config.empty())
    LOOM_RETURN_IF_ERROR(config::ParseTextProtoFileInto(args.config, &config));
  LOOM_RETURN_IF_ERROR(config::ApplyOverrides(args.sets, &config));
  const int64_t B = args.batch, T = args.seq_len;
  LOOM_ASSIGN_OR_RETURN(auto model,
                        model::InterFormer::Create(config, B, T, args.dtype, Device::Cpu()));
  const model::ModelDims& D = model->dims();
  model::ParameterStore& store = model->parameters();
  model->Initialize(args.seed);
  if (args.perturb) {
    // In f64 so f32 and f64 runs see the same (f32-representable) weights.
    for (model::Parameter& p : store.parameters()) {
      if (p.init.kind != model::InitRule::Kind::kZeros &&
          p.init.kind != model::InitRule::Kind::kOnes) {
        continue;
      }
      Tensor noise = Tensor::Empty(p.shape, DType::kF64);
      FillNormal(ExecContext::Cpu(), noise.view(), args.seed,
                 MakeStream(kRngTest, static_cast<uint64_t>(p.index), 1), 0.0, 0.1);
      for (int64_t i = 0; i < p.numel(); ++i) {
        if (args.dtype == DType::kF32) {
          p.value.data<float>()[i] += static_cast<float>(noise.data<double>()[i]);
        } else {
          p.value.data<double>()[i] += noise.data<double>()[i];
        }
      }
    }
  }
  // f64 runs use the f32-rounded weights, so both dtypes describe the same file.
  if (args.dtype == DType::kF64) {
    double* v = store.values().data<double>();
    for (int64_t i = 0; i < store.total_elements(); ++i) v[i] = static_cast<float>(v[i]);
  }

  // The batch (f32-representable values).
  std::mt19937_64 rng(args.seed + 1);
  std::normal_distribution<double> normal(0.0, 1.0);
  auto randn = [&](int64_t n) {
    std::vector<double> v(n);
    for (double& x : v) x = static_cast<float>(normal(rng));
    return v;
  };
  const DType dt = args.dtype;
  Tensor dense = HostTensor(randn(B * D.m), Shape{B, D.m}, dt);
  Tensor sparse = HostTensor(randn(B * D.n * D.d), Shape{B, D.n, D.d}, dt);
  std::vector<Tensor> seqs;
  for (int64_t j = 0; j < D.k; ++j)
    seqs.push_back(HostTensor(randn(B * T * D.d), Shape{B, T, D.d}, dt));
  Tensor mask = Tensor::Zeros(Shape{B, T}, DType::kU8);
  std::vector<int64_t> lengths(B);
  for (int64_t i = 0; i < B; ++i) {
    const int64_t fixed[3] = {T, 0, 1};
    lengths[i] = i < 3 ? fixed[i] : static_cast<int64_t>(rng() % static_cast<uint64_t>(T + 1));
    for (int64_t t = T - lengths[i]; t < T; ++t) mask.data<uint8_t>()[i * T + t] = 1;
  }
  std::vector<double> lab(B);
  for (double& y : lab) y = static_cast<double>(rng() % 2);
  Tensor labels = HostTensor(lab, Shape{B}, dt);

  model::DenseInputs in;
  in.dense = dense;
  in.sparse = sparse;
  for (const Tensor& s : seqs) in.seq.push_back(s);
  in.seq_mask = mask;
  LOOM_RETURN_IF_ERROR(model->ValidateInputs(in));
  const ExecContext ctx = ExecContext::Cpu();
  Tensor logits = Tensor::Empty(Shape{B}, dt);
  Tensor loss = Tensor::Empty(Shape{1}, dt);
  Tensor grad_logits = Tensor::Empty(Shape{B}, dt);
  store.ZeroGrad();
  model->Forward(ctx, in, logits);
  model->Loss(ctx, labels, loss, grad_logits);
  model->Backward(ctx, grad_logits);

  // Files.
  std::error_code ec;
  std::filesystem::create_directories(args.out, ec);
  if (ec) return InvalidArgumentError("--out " + args.out + ": " + ec.message());
  SafetensorsWriter weights;
  for (const model::Parameter& p : store.parameters()) weights.Add(p.name, ToF32(p.value));
  weights.SetMetadata("model_config", model::ModelConfigToJson(config));
  LOOM_RETURN_IF_ERROR(weights.Write(args.out + "/weights.safetensors"));

  SafetensorsWriter batch;
  if (D.m > 0) batch.Add("dense", ToF32(dense));
  batch.Add("sparse", ToF32(sparse));
  for (int64_t j = 0; j < D.k; ++j) batch.Add("seq." + std::to_string(j), ToF32(seqs[j]));
  batch.Add("seq_mask", mask);
  batch.Add("label", ToF32(labels));
  LOOM_RETURN_IF_ERROR(batch.Write(args.out + "/batch.safetensors"));

  SafetensorsWriter out;
  out.Add("logits", logits);
  out.Add("loss", loss);
  for (const model::Parameter& p : store.parameters()) out.Add("grad." + p.name, p.grad);
  const model::DenseInputGrads& g = model->input_grads();
  out.Add("grad.input.sparse", g.sparse);
  for (int64_t j = 0; j < D.k; ++j) out.Add("grad.input.seq." + std::to_string(j), g.seq[j]);
  if (D.m > 0) out.Add("grad.input.dense", g.dense);
  LOOM_RETURN_IF_ERROR(out.Write(args.out + "/loom_out.safetensors"));

  std::string lens;
  for (int64_t i = 0; i < B && i < 16; ++i) lens += (i ? "," : "") + std::to_string(lengths[i]);
  std::printf(
      "loom_model_parity: %zu parameters (%lld values), B=%lld T=%lld lengths [%s], "
      "loss %.6f (%s); wrote %s/{weights,batch,loom_out}.safetensors\n",
      store.parameters().size(), static_cast<long long>(store.total_elements()),
      static_cast<long long>(B), static_cast<long long>(T), lens.c_str(),
      dt == DType::kF32 ? loss.data<float>()[0] : loss.data<double>()[0], DTypeName(dt),
      args.out.c_str());
  return Status::Ok();
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) {
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  auto args = loom::ParseArgs(argc, argv);
  if (!args.ok()) {
    loom::Usage();
    std::fprintf(stderr, "loom_model_parity: %s\n", args.status().ToString().c_str());
    return 2;
  }
  const loom::Status s = loom::Run(*args);
  if (!s.ok()) {
    std::fprintf(stderr, "loom_model_parity: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
