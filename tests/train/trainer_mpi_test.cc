// Tests of the distributed trainer (csrc/train/trainer.h) at 1 and 2 ranks, on a tiny
// synthetic data set: a full run with its run files, exact resume (N steps + checkpoint +
// fresh trainer + N steps == 2N steps, every tensor file bit for bit), resume past damaged
// checkpoints, refused incompatible resumes, config mismatches. World-size equivalence is
// world_size_mpi_test.cc (2 ranks only).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <mpi.h>

#include "csrc/comm/mpi_communicator.h"
#include "csrc/proto/config_io.h"
#include "csrc/train/checkpoint.h"
#include "csrc/train/run_log.h"
#include "csrc/train/trainer.h"
#include "tests/train/train_test_util.h"

namespace loom::train {
namespace {

namespace fs = std::filesystem;
using testing::GenerateTinyData;
using testing::JsonField;
using testing::ReadFile;
using testing::ReadLines;
using testing::SharedTempDir;
using testing::TinyConfig;

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto c = comm::MpiCommunicator::Create(MPI_COMM_WORLD);
    LOOM_CHECK_OK(c.status());
    comm_ = c->release();
    root_ = SharedTempDir(*comm_, "loom-trainer-test");
    data_ = root_ + "/data";
    oracle_auc_ = GenerateTinyData(*comm_, data_, 4000);
  }
  static void TearDownTestSuite() {
    testing::RemoveTree(*comm_, root_);
    delete comm_;
    comm_ = nullptr;
  }
  static std::string Dir(const std::string& name) { return root_ + "/" + name; }

  static std::unique_ptr<Trainer> Make(const proto::LoomConfig& c, TrainerOptions o = {}) {
    auto t = Trainer::Create(c, comm_, o);
    LOOM_CHECK_OK(t.status());
    return std::move(*t);
  }

  static comm::Communicator* comm_;
  static std::string root_, data_;
  static double oracle_auc_;
};
comm::Communicator* TrainerTest::comm_ = nullptr;
std::string TrainerTest::root_, TrainerTest::data_;
double TrainerTest::oracle_auc_ = 0;

TEST_F(TrainerTest, RunWritesMetricsProgressAndEffectiveConfig) {
  const std::string run = Dir("run_files");
  proto::LoomConfig c = TinyConfig(data_, run);
  c.mutable_train()->set_max_steps(60);
  c.mutable_train()->set_eval_every_steps(20);
  c.mutable_train()->set_log_every_steps(10);
  c.mutable_train()->mutable_checkpoint()->set_save_at_end(true);
  auto t = Make(c);
  auto s = t->Run();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->step, 60);
  EXPECT_EQ(s->samples_seen, 60 * 32);
  ASSERT_TRUE(s->final_metrics.has_value());
  // It learned something: the generator's planted model is far from random.
  EXPECT_GT(s->final_metrics->auc, 0.6) << "oracle AUC " << oracle_auc_;
  EXPECT_EQ(s->final_metrics->num_samples, 1000);  // the whole test split
  EXPECT_FALSE(s->last_checkpoint.empty());
  comm_->Barrier();
  if (comm_->rank() == 0) {
    // One JSON object per evaluation, at steps 20, 40, 60.
    const auto lines = ReadLines(run + "/" + kMetricsFileName);
    ASSERT_EQ(lines.size(), 3u);
    const double steps[] = {20, 40, 60};
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(JsonField(lines[i], "step"), steps[i]) << lines[i];
      for (const char* key :
           {"auc", "gauc", "logloss", "ne", "calibration", "samples_per_sec", "train_loss"}) {
        EXPECT_TRUE(std::isfinite(JsonField(lines[i], key))) << key << " in " << lines[i];
      }
    }
    EXPECT_EQ(JsonField(lines.back(), "auc"), s->final_metrics->auc);
    EXPECT_EQ(JsonField(lines.back(), "logloss"), s->final_metrics->logloss);
    // One progress object per log_every_steps.
    const auto progress = ReadLines(run + "/" + kTrainLogFileName);
    ASSERT_EQ(progress.size(), 6u);
    EXPECT_EQ(JsonField(progress[0], "step"), 10);
    EXPECT_LT(JsonField(progress.back(), "loss"), JsonField(progress[0], "loss"));
    // The effective config reads back as the config that ran.
    proto::LoomConfig back;
    ASSERT_TRUE(config::ParseTextProtoFileInto(run + "/effective_config.pbtxt", &back).ok());
    EXPECT_EQ(config::ToText(back), config::ToText(config::EffectiveConfig(c)));
  }
}

// Every tensor file of two checkpoints, byte for byte.
void ExpectSameTensors(const std::string& a, const std::string& b) {
  auto ma = ReadManifest(a);
  auto mb = ReadManifest(b);
  ASSERT_TRUE(ma.ok()) << ma.status();
  ASSERT_TRUE(mb.ok()) << mb.status();
  ASSERT_EQ(ma->files_size(), mb->files_size());
  for (int i = 0; i < ma->files_size(); ++i) {
    const std::string name = ma->files(i).name();
    EXPECT_EQ(name, mb->files(i).name());
    const std::string x = ReadFile(a + "/" + name), y = ReadFile(b + "/" + name);
    EXPECT_GT(x.size(), 0u) << name;
    EXPECT_TRUE(x == y) << name << " differs between " << a << " and " << b;
  }
  ASSERT_EQ(ma->tensors_size(), mb->tensors_size());
  for (int i = 0; i < ma->tensors_size(); ++i) {
    EXPECT_EQ(ma->tensors(i).crc32c(), mb->tensors(i).crc32c()) << ma->tensors(i).name();
  }
  EXPECT_EQ(ma->trainer().samples_seen(), mb->trainer().samples_seen());
  EXPECT_EQ(ma->dense_optimizer().step(), mb->dense_optimizer().step());
  for (int r = 0; r < ma->ranks_size(); ++r) {
    EXPECT_EQ(ma->ranks(r).SerializeAsString(), mb->ranks(r).SerializeAsString()) << "rank " << r;
  }
}

TEST_F(TrainerTest, ExactResumeIsBitIdentical) {
  // 3000 training rows in global batches of 32: 94 steps per epoch, so the 2N = 120 steps
  // cross an epoch end (and its evaluation) after the resume point; evaluations every 10
  // steps feed the early-stopping counters that the checkpoint must carry.
  const int64_t n = 60;
  proto::LoomConfig full = TinyConfig(data_, Dir("resume_full"));
  full.mutable_train()->set_max_steps(2 * n);
  full.mutable_train()->mutable_checkpoint()->set_save_at_end(true);
  auto a = Make(full);
  auto sa = a->Run();
  ASSERT_TRUE(sa.ok()) << sa.status();
  a.reset();

  proto::LoomConfig half = TinyConfig(data_, Dir("resume_split"));
  half.mutable_train()->set_max_steps(n);
  half.mutable_train()->mutable_checkpoint()->set_save_at_end(true);
  auto b = Make(half);
  auto sb = b->Run();
  ASSERT_TRUE(sb.ok()) << sb.status();
  EXPECT_EQ(sb->step, n);
  b.reset();
  // A fresh trainer (new embeddings, model, optimizer, readers) resumes and goes on.
  proto::LoomConfig rest = half;
  rest.mutable_train()->set_max_steps(2 * n);
  rest.mutable_train()->mutable_checkpoint()->set_resume(proto::CheckpointConfig::RESUME_REQUIRED);
  auto c = Make(rest);
  auto sc = c->Run();
  ASSERT_TRUE(sc.ok()) << sc.status();
  EXPECT_EQ(sc->step, 2 * n);
  EXPECT_EQ(sc->resumed_from, Dir("resume_split") + "/checkpoints/" + CheckpointDirName(n));
  ASSERT_TRUE(sa->final_metrics && sc->final_metrics);
  EXPECT_EQ(sa->final_metrics->auc, sc->final_metrics->auc);
  EXPECT_EQ(sa->final_metrics->logloss, sc->final_metrics->logloss);
  comm_->Barrier();
  if (comm_->rank() == 0) {
    ExpectSameTensors(sa->last_checkpoint, sc->last_checkpoint);
  }
}

TEST_F(TrainerTest, ResumeSkipsDamagedCheckpoints) {
  const std::string run = Dir("damaged");
  proto::LoomConfig c = TinyConfig(data_, run);
  c.mutable_train()->set_max_steps(12);
  c.mutable_train()->set_eval_every_steps(0);
  c.mutable_train()->mutable_checkpoint()->set_every_steps(4);
  auto t = Make(c);
  ASSERT_TRUE(t->Run().ok());
  t.reset();
  const std::string ckdir = run + "/checkpoints";
  // On rank 0 (a lambda, so a failed ASSERT still reaches the barrier below).
  auto damage = [&] {
    // keep_last 3: steps 4, 8, 12. Corrupt one byte of step 12's dense file, truncate an
    // embedding file of step 8.
    auto list = ListCheckpoints(ckdir);
    ASSERT_TRUE(list.ok());
    ASSERT_EQ(list->size(), 3u);
    EXPECT_EQ((*list)[0].step, 12);
    EXPECT_EQ((*list)[2].step, 4);
    {
      std::fstream f(ckdir + "/" + CheckpointDirName(12) + "/" + kDenseFileName,
                     std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(100);
      char byte = 0;
      f.read(&byte, 1);
      f.seekp(100);
      byte ^= 0x40;
      f.write(&byte, 1);
    }
    const std::string emb = ckdir + "/" + CheckpointDirName(8) + "/" + EmbeddingFileName(0);
    fs::resize_file(emb, fs::file_size(emb) - 10);
    // The offline checks name the file and the fault.
    auto m12 = ReadManifest(ckdir + "/" + CheckpointDirName(12));
    ASSERT_TRUE(m12.ok());
    Status v12 = VerifyCheckpoint(ckdir + "/" + CheckpointDirName(12), *m12, true);
    EXPECT_EQ(v12.code(), StatusCode::kDataLoss);
    EXPECT_NE(v12.message().find("dense.bin: CRC-32C"), std::string::npos) << v12;
    auto m8 = ReadManifest(ckdir + "/" + CheckpointDirName(8));
    ASSERT_TRUE(m8.ok());
    Status v8 = VerifyCheckpoint(ckdir + "/" + CheckpointDirName(8), *m8, false);
    EXPECT_NE(v8.message().find(EmbeddingFileName(0) + ": size"), std::string::npos) << v8;
    EXPECT_NE(v8.message().find("truncated"), std::string::npos) << v8;
  };
  comm_->Barrier();
  if (comm_->rank() == 0) damage();
  comm_->Barrier();
  proto::LoomConfig more = c;
  more.mutable_train()->set_max_steps(16);
  auto r = Make(more);
  auto path = r->Resume();
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, ckdir + "/" + CheckpointDirName(4));
  EXPECT_EQ(r->step(), 4);
}

TEST_F(TrainerTest, IncompatibleResumeIsRefused) {
  const std::string run = Dir("incompatible");
  proto::LoomConfig c = TinyConfig(data_, run);
  c.mutable_train()->set_max_steps(3);
  c.mutable_train()->set_eval_every_steps(0);
  c.mutable_train()->mutable_checkpoint()->set_save_at_end(true);
  ASSERT_TRUE(Make(c)->Run().ok());
  // Another model shape: the checkpoint is not silently ignored.
  proto::LoomConfig other = c;
  other.mutable_model()->clear_head_hidden_dims();
  other.mutable_model()->add_head_hidden_dims(12);
  auto t = Make(other);
  auto r = t->Resume();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("model_hash"), std::string::npos) << r.status();
  // RESUME_REQUIRED with no checkpoint is an error; RESUME_AUTO starts at 0.
  proto::LoomConfig fresh = TinyConfig(data_, Dir("incompatible_fresh"));
  fresh.mutable_train()->mutable_checkpoint()->set_resume(proto::CheckpointConfig::RESUME_REQUIRED);
  auto t2 = Make(fresh);
  auto r2 = t2->Resume();
  EXPECT_EQ(r2.status().code(), StatusCode::kNotFound) << r2.status();
  fresh.mutable_train()->mutable_checkpoint()->set_resume(proto::CheckpointConfig::RESUME_AUTO);
  auto t3 = Make(fresh);
  auto r3 = t3->Resume();
  ASSERT_TRUE(r3.ok()) << r3.status();
  EXPECT_EQ(*r3, "");
}

// Early stopping: with min_delta 1 no evaluation after the first can improve AUC, so with
// patience 2 training stops at the third evaluation (step 30 of 60), saves its state and a
// resumed run does not train further.
TEST_F(TrainerTest, EarlyStoppingStopsAndIsResumedAsStopped) {
  const std::string run = Dir("early_stop");
  proto::LoomConfig c = TinyConfig(data_, run);
  c.mutable_train()->set_max_steps(60);
  c.mutable_train()->set_eval_every_steps(10);
  c.mutable_train()->mutable_early_stopping()->set_patience(2);
  c.mutable_train()->mutable_early_stopping()->set_min_delta(1.0);
  c.mutable_train()->mutable_checkpoint()->set_save_at_end(true);
  auto s = Make(c)->Run();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->stopped_early);
  EXPECT_EQ(s->step, 30);
  comm_->Barrier();
  if (comm_->rank() == 0) {
    EXPECT_EQ(ReadLines(run + "/" + kMetricsFileName).size(), 3u);
    auto m = ReadManifest(run + "/checkpoints/" + CheckpointDirName(30));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_TRUE(m->trainer().stopped_early());
    EXPECT_EQ(m->trainer().evals_without_improvement(), 2);
    EXPECT_EQ(m->trainer().best_step(), 10);
  }
  auto again = Make(c)->Run();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->step, 30);
  EXPECT_TRUE(again->stopped_early);
}

TEST_F(TrainerTest, ConfigMismatchNamesTheField) {
  proto::LoomConfig c = TinyConfig(data_, Dir("mismatch"));
  c.mutable_model()->set_num_sparse_features(4);
  c.mutable_embedding()->mutable_features(3)->set_name("no_such_feature");
  auto t = Trainer::Create(c, comm_);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("embedding.features[3] (no_such_feature).name"),
            std::string::npos)
      << t.status();
}

}  // namespace
}  // namespace loom::train
