// loom_train: trains a model from a config (csrc/train/trainer.h). Run it through
// `launcher/loom train` (which adds mpirun or srun for several ranks).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <glog/logging.h>

#include "csrc/comm/bootstrap.h"
#include "csrc/core/logging.h"
#include "csrc/proto/config_io.h"
#include "csrc/train/trainer.h"

namespace loom::train {
namespace {

constexpr char kUsage[] = R"(loom train: train a CTR model on one or many ranks.

Usage: loom train --config FILE.pbtxt [--set 'TEXT' ...] [flags]
       (several ranks: loom train --np 2 ...; see launcher/loom)

  --config FILE     the LoomConfig (proto2 text format; docs/configs.md)
  --set TEXT        an override in the same syntax, applied in order after the file, e.g.
                    --set 'train { max_steps: 100 }' --set 'optimizer { lr: 0.01 }'
  --model NAME      interformer or dlrm_baseline (embeddings + mean-pooled sequences + MLP;
                    docs/results.md): a shorthand for --set 'model { architecture: ... }'
                    (default: the config's, ARCHITECTURE_INTERFORMER unless set)
  --data-slices S   read the training data as S slices (a multiple of the ranks; default: the
                    number of ranks). Runs with the same S and global batch see the same
                    batches at any world size dividing S (docs/training.md)
  --resume          require a checkpoint to resume from (train.checkpoint.resume =
                    RESUME_REQUIRED); the default, RESUME_AUTO, resumes from the newest valid
                    checkpoint when there is one
  --no-resume       start at step 0 even if checkpoints exist (RESUME_NEVER)
  --print-config    print the effective config (every default spelled out) and exit
  --help            this text

Outputs (train.run_dir): effective_config.pbtxt, metrics.jsonl (one JSON object per
evaluation), train_log.jsonl (one per progress line), checkpoints/ (docs/checkpoint-format.md).
The last line on stdout (rank 0) is a summary:
  loom train: done: step=N epoch=E auc=... gauc=... logloss=... ne=... calibration=... ...
Exit status: 0 on success, 1 on a failure during setup or training, 2 for bad flags or config.
)";

struct Flags {
  std::string config;
  std::vector<std::string> overrides;
  std::string model;  // empty: the config's model.architecture
  int resume = -1;    // -1: as configured; else a CheckpointConfig::Resume value
  int data_slices = 0;
  bool print_config = false;
};

// Returns 0 to continue, 1 for --help, 2 for a bad flag (message in *error).
int ParseFlags(int argc, char** argv, Flags* f, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    bool has_value = false;
    const size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    auto take = [&](std::string* out) -> bool {
      if (has_value) {
        *out = value;
        return true;
      }
      if (i + 1 >= argc) {
        *error = a + " needs a value";
        return false;
      }
      *out = argv[++i];
      return true;
    };
    if (a == "-h" || a == "--help") return 1;
    if (a == "--config") {
      if (!take(&f->config)) return 2;
    } else if (a == "--set") {
      std::string v;
      if (!take(&v)) return 2;
      f->overrides.push_back(v);
    } else if (a == "--model") {
      if (!take(&f->model)) return 2;
      proto::ModelConfig check;
      if (!SetModelType(f->model, &check).ok()) {
        *error = "--model: '" + f->model + "' is not interformer or dlrm_baseline";
        return 2;
      }
    } else if (a == "--data-slices") {
      std::string v;
      if (!take(&v)) return 2;
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > 1 << 20) {
        *error = "--data-slices: '" + v + "' is not a number in [1, 1048576]";
        return 2;
      }
      f->data_slices = static_cast<int>(n);
    } else if (a == "--resume") {
      f->resume = proto::CheckpointConfig::RESUME_REQUIRED;
    } else if (a == "--no-resume") {
      f->resume = proto::CheckpointConfig::RESUME_NEVER;
    } else if (a == "--print-config") {
      f->print_config = true;
    } else {
      *error = "unknown flag '" + a + "' (see --help)";
      return 2;
    }
  }
  if (f->config.empty()) {
    *error = "--config is required (see --help)";
    return 2;
  }
  return 0;
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6f", v);
  return buf;
}

int Main(int argc, char** argv) {
  Flags flags;
  std::string error;
  const char* env_rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (env_rank == nullptr) env_rank = std::getenv("PMIX_RANK");
  if (env_rank == nullptr) env_rank = std::getenv("SLURM_PROCID");
  const bool first = env_rank == nullptr || std::strcmp(env_rank, "0") == 0;
  if (int rc = ParseFlags(argc, argv, &flags, &error); rc != 0) {
    if (first) {
      if (rc == 1) {
        std::fputs(kUsage, stdout);
      } else {
        std::fprintf(stderr, "loom train: %s\n", error.c_str());
      }
    }
    return rc == 1 ? 0 : 2;
  }

  StatusOr<proto::LoomConfig> config = config::LoadConfig(flags.config, flags.overrides);
  if (!config.ok()) {
    if (first) std::fprintf(stderr, "loom train: %s\n", config.status().message().c_str());
    return 2;
  }
  if (!flags.model.empty()) LOOM_CHECK_OK(SetModelType(flags.model, config->mutable_model()));
  if (flags.resume >= 0) {
    config->mutable_train()->mutable_checkpoint()->set_resume(
        static_cast<proto::CheckpointConfig::Resume>(flags.resume));
  }
  if (flags.print_config) {
    if (first) std::fputs(config::ToText(config::EffectiveConfig(*config)).c_str(), stdout);
    return 0;
  }

  comm::BootstrapOptions bopts;
  StatusOr<comm::Bootstrap> boot = comm::InitDistributed(&argc, &argv, bopts);
  if (!boot.ok()) {
    LOG(ERROR) << "loom train: " << boot.status();
    return 1;
  }
  int rc = 0;
  {
    StatusOr<std::unique_ptr<comm::Communicator>> comm =
        comm::CreateCommunicator(comm::Backend::kMpi, *boot);
    if (!comm.ok()) {
      LOG(ERROR) << "loom train: " << comm.status();
      AbortJob(1);
    }
    LOOM_LOG_RANK0(INFO) << "loom train: config " << flags.config << ", " << flags.overrides.size()
                         << " override(s), effective config:\n"
                         << config::ToText(config::EffectiveConfig(*config));
    TrainerOptions opts;
    opts.data_slices = flags.data_slices;
    opts.producer = "loom_train (config " + flags.config + ")";
    auto trainer = Trainer::Create(*config, comm->get(), opts);
    if (!trainer.ok()) {
      if (boot->rank == 0 || trainer.status().code() != StatusCode::kInternal) {
        LOG(ERROR) << "loom train: " << trainer.status().message();
      }
      rc = 1;
    } else {
      auto summary = (*trainer)->Run();
      if (!summary.ok()) {
        LOG(ERROR) << "loom train: " << summary.status().message();
        rc = 1;
      } else if (boot->rank == 0) {
        std::string line = "loom train: done: step=" + std::to_string(summary->step) +
                           " epoch=" + std::to_string(summary->epoch) +
                           " samples=" + std::to_string(summary->samples_seen);
        if (summary->final_metrics) {
          const EvalMetrics& m = *summary->final_metrics;
          line += " auc=" + Num(m.auc) + " gauc=" + Num(m.gauc) + " logloss=" + Num(m.logloss) +
                  " ne=" + Num(m.ne) + " calibration=" + Num(m.calibration);
        }
        line += " samples_per_sec=" + Num(summary->samples_per_sec) +
                " train_seconds=" + Num(summary->train_seconds);
        if (summary->stopped_early) line += " stopped_early=1";
        if (!summary->resumed_from.empty()) line += " resumed_from=" + summary->resumed_from;
        if (!summary->last_checkpoint.empty()) line += " checkpoint=" + summary->last_checkpoint;
        line += " run_dir=" + config->train().run_dir();
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      }
    }
  }
  Status fin = comm::FinalizeDistributed(*boot);
  if (!fin.ok()) {
    LOG(ERROR) << fin;
    return 1;
  }
  return rc;
}

}  // namespace
}  // namespace loom::train

int main(int argc, char** argv) { return loom::train::Main(argc, argv); }
