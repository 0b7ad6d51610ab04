#include "csrc/core/safetensors.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

namespace loom {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/loom_st_" + std::to_string(getpid()) + "_" + name;
}

TEST(SafetensorsTest, RoundTripsTensorsAndMetadata) {
  const std::string path = TempPath("roundtrip.safetensors");
  Tensor a = Tensor::FromVector<float>({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f}, Shape{2, 3});
  Tensor b = Tensor::FromVector<int64_t>({-1, 1LL << 40}, Shape{2});
  Tensor c = Tensor::FromVector<double>({3.0}, Shape{});
  Tensor empty = Tensor::Empty(Shape{0, 4}, DType::kF32);
  SafetensorsWriter w;
  w.Add("layers.0.weight", a);
  w.Add("ids", b);
  w.Add("scalar", c);
  w.Add("empty", empty);
  w.SetMetadata("model_config", "{\"embedding_dim\": 8, \"note\": \"a\\\"b\"}");
  ASSERT_TRUE(w.Write(path).ok());

  StatusOr<SafetensorsFile> f = SafetensorsFile::Read(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->names().size(), 4u);
  EXPECT_EQ(f->metadata().at("model_config"), "{\"embedding_dim\": 8, \"note\": \"a\\\"b\"}");
  Tensor ra = *f->Get("layers.0.weight");
  EXPECT_EQ(ra.shape(), (Shape{2, 3}));
  EXPECT_EQ(ra.ToVector<float>(), a.ToVector<float>());
  EXPECT_EQ(f->Get("ids")->ToVector<int64_t>(), b.ToVector<int64_t>());
  EXPECT_EQ(f->Get("scalar")->ToVector<double>(), std::vector<double>{3.0});
  EXPECT_EQ(f->Get("empty")->shape(), (Shape{0, 4}));
  EXPECT_EQ(f->Get("missing").status().code(), StatusCode::kNotFound);
  std::remove(path.c_str());
}

TEST(SafetensorsTest, TruncatedAndCorruptFilesNameTheProblem) {
  const std::string path = TempPath("bad.safetensors");
  SafetensorsWriter w;
  w.Add("x", Tensor::FromVector<float>(std::vector<float>(100, 1.0f), Shape{100}));
  ASSERT_TRUE(w.Write(path).ok());
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();

  auto write = [&](const std::string& content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  };
  write(bytes.substr(0, bytes.size() - 10));  // truncated data
  StatusOr<SafetensorsFile> f = SafetensorsFile::Read(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find(path), std::string::npos);
  EXPECT_NE(f.status().message().find("'x'"), std::string::npos);

  write(bytes.substr(0, 5));  // shorter than the length prefix
  EXPECT_EQ(SafetensorsFile::Read(path).status().code(), StatusCode::kDataLoss);

  std::string corrupt = bytes;
  corrupt[8] = '#';  // the JSON header's opening brace
  write(corrupt);
  f = SafetensorsFile::Read(path);
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find("header JSON"), std::string::npos);

  EXPECT_EQ(SafetensorsFile::Read(path + ".absent").status().code(), StatusCode::kNotFound);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace loom
