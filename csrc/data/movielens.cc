#include "csrc/data/movielens.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <sstream>
#include <unordered_map>

#include <glog/logging.h>

#include "csrc/data/bad_records.h"
#include "csrc/data/batch.h"
#include "csrc/data/schema.h"
#include "csrc/data/text_input.h"
#include "csrc/data/writer.h"

namespace loom::data {
namespace {

// u.genre order: the last 19 fields of u.item are these flags.
constexpr const char* kGenres100K[19] = {
    "unknown",     "Action", "Adventure", "Animation", "Children's", "Comedy",  "Crime",
    "Documentary", "Drama",  "Fantasy",   "Film-Noir", "Horror",     "Musical", "Mystery",
    "Romance",     "Sci-Fi", "Thriller",  "War",       "Western"};

// Feature indices of MovieLensSchema.
enum Sparse { kUser, kItem, kGender, kAge, kOccupation, kZip3, kDecade, kHour, kWeekday, kGenres };
enum Sequence { kItemHistory, kGenreHistory, kRatingHistory };

struct User {
  std::string gender;
  int64_t age = 0;  // bucket code
  std::string occupation;
  std::string zip3;
};
struct Item {
  int64_t decade = 0;  // 0 = unknown
  std::vector<std::string> genres;
};
struct Rating {
  int64_t user = 0, item = 0;
  int rating = 0;
  int64_t ts = 0;
  int64_t seq = 0;  // input order (tie-break for exact duplicates)
};

// Value -> id in order of first appearance (ids 1..V).
class Vocabulary {
 public:
  void Add(const std::string& v) {
    if (ids_.emplace(v, static_cast<int64_t>(ids_.size()) + 1).second) order_.push_back(v);
  }
  int64_t Get(const std::string& v) const {
    auto it = ids_.find(v);
    return it == ids_.end() ? 0 : it->second;
  }
  int64_t size() const { return static_cast<int64_t>(ids_.size()); }

 private:
  std::unordered_map<std::string, int64_t> ids_;
  std::vector<std::string> order_;
};

void SplitOn(std::string_view line, std::string_view sep, std::vector<std::string_view>* out) {
  out->clear();
  size_t i = 0;
  while (true) {
    const size_t j = line.find(sep, i);
    if (j == std::string_view::npos) {
      out->push_back(line.substr(i));
      return;
    }
    out->push_back(line.substr(i, j - i));
    i = j + sep.size();
  }
}

int64_t AgeBucket100K(int64_t age) {
  if (age < 18) return 1;
  if (age < 25) return 18;
  if (age < 35) return 25;
  if (age < 45) return 35;
  if (age < 50) return 45;
  if (age < 56) return 50;
  return 56;
}

std::string Zip3(std::string_view zip) { return std::string(Trim(zip).substr(0, 3)); }

class MovieLensConverter {
 public:
  explicit MovieLensConverter(const MovieLensOptions& o)
      : o_(o), bad_(o.bad_record_policy, o.max_bad_records) {}
  StatusOr<MovieLensResult> Run();

 private:
  // Reads `path` line by line; `parse` returns a non-OK Status for a malformed line, which
  // becomes a bad record "path:line: message".
  template <typename Fn>
  Status ForEachLine(const std::string& path, Fn parse) {
    LOOM_ASSIGN_OR_RETURN(auto in, LineReader::Open(path));
    std::string_view line;
    while (in->Next(&line)) {
      if (Trim(line).empty()) continue;
      Status s = parse(line);
      if (!s.ok()) LOOM_RETURN_IF_ERROR(bad_.Add(1, in->Where() + ": " + s.message()));
    }
    return in->status();
  }
  Status ReadUsers();
  Status ReadItems();
  Status ReadRatings();

  MovieLensOptions o_;
  BadRecordCounter bad_;
  std::unordered_map<int64_t, User> users_;
  std::unordered_map<int64_t, Item> items_;
  std::vector<Rating> ratings_;
  std::vector<std::string_view> f_;
};

Status MovieLensConverter::ReadUsers() {
  const bool is100k = o_.variant == MovieLensVariant::k100K;
  const std::string path = o_.input_dir + (is100k ? "/u.user" : "/users.dat");
  return ForEachLine(path, [&](std::string_view line) -> Status {
    is100k ? SplitOn(line, "|", &f_) : SplitOn(line, "::", &f_);
    if (f_.size() != 5) {
      return InvalidArgumentError(std::to_string(f_.size()) + " fields, expected 5");
    }
    int64_t id, age;
    LOOM_RETURN_IF_ERROR(ParseInt64(f_[0], 10, &id).WithContext("user id"));
    User u;
    const std::string_view gender = Trim(is100k ? f_[2] : f_[1]);
    LOOM_RETURN_IF_ERROR(ParseInt64(is100k ? f_[1] : f_[2], 10, &age).WithContext("age"));
    if (gender != "M" && gender != "F") {
      return InvalidArgumentError("gender '" + std::string(gender) + "' is not M or F");
    }
    u.gender = std::string(gender);
    if (is100k) {
      if (age < 1 || age > 120) return InvalidArgumentError("age " + std::to_string(age));
      u.age = AgeBucket100K(age);
    } else {
      static const int64_t kCodes[] = {1, 18, 25, 35, 45, 50, 56};
      if (std::find(std::begin(kCodes), std::end(kCodes), age) == std::end(kCodes)) {
        return InvalidArgumentError("age code " + std::to_string(age) +
                                    " is not one of 1,18,25,35,45,50,56");
      }
      u.age = age;
    }
    u.occupation = std::string(Trim(f_[3]));
    u.zip3 = Zip3(f_[4]);
    if (!users_.emplace(id, u).second) {
      return InvalidArgumentError("user " + std::to_string(id) + " appears twice");
    }
    return Status::Ok();
  });
}

Status MovieLensConverter::ReadItems() {
  const bool is100k = o_.variant == MovieLensVariant::k100K;
  const std::string path = o_.input_dir + (is100k ? "/u.item" : "/movies.dat");
  return ForEachLine(path, [&](std::string_view line) -> Status {
    Item item;
    int64_t id;
    if (is100k) {
      SplitOn(line, "|", &f_);
      if (f_.size() != 24) {
        return InvalidArgumentError(std::to_string(f_.size()) + " fields, expected 24");
      }
      LOOM_RETURN_IF_ERROR(ParseInt64(f_[0], 10, &id).WithContext("item id"));
      const std::string_view date = Trim(f_[2]);  // dd-Mon-yyyy, or empty
      if (!date.empty()) {
        int64_t year;
        if (date.size() < 4 || !ParseInt64(date.substr(date.size() - 4), 10, &year).ok() ||
            date[date.size() - 5] != '-' || year < 1000) {
          return InvalidArgumentError("release date '" + std::string(date) +
                                      "' is not dd-Mon-yyyy");
        }
        item.decade = year / 10 * 10;
      }
      for (int g = 0; g < 19; ++g) {
        const std::string_view flag = Trim(f_[5 + g]);
        if (flag == "1") {
          item.genres.push_back(kGenres100K[g]);
        } else if (flag != "0") {
          return InvalidArgumentError("genre flag '" + std::string(flag) + "' is not 0 or 1");
        }
      }
    } else {
      SplitOn(line, "::", &f_);
      if (f_.size() != 3) {
        return InvalidArgumentError(std::to_string(f_.size()) + " fields, expected 3");
      }
      LOOM_RETURN_IF_ERROR(ParseInt64(f_[0], 10, &id).WithContext("movie id"));
      const std::string_view title = Trim(f_[1]);
      int64_t year;
      if (title.size() >= 6 && title.back() == ')' && title[title.size() - 6] == '(' &&
          ParseInt64(title.substr(title.size() - 5, 4), 10, &year).ok() && year >= 1000) {
        item.decade = year / 10 * 10;
      }
      std::vector<std::string_view> genres;
      SplitList(Trim(f_[2]), '|', &genres);
      for (auto g : genres) {
        if (Trim(g).empty()) return InvalidArgumentError("empty genre");
        item.genres.emplace_back(Trim(g));
      }
    }
    if (!items_.emplace(id, std::move(item)).second) {
      return InvalidArgumentError("item " + std::to_string(id) + " appears twice");
    }
    return Status::Ok();
  });
}

Status MovieLensConverter::ReadRatings() {
  const bool is100k = o_.variant == MovieLensVariant::k100K;
  const std::string path = o_.input_dir + (is100k ? "/u.data" : "/ratings.dat");
  return ForEachLine(path, [&](std::string_view line) -> Status {
    is100k ? SplitOn(line, "\t", &f_) : SplitOn(line, "::", &f_);
    if (f_.size() != 4) {
      return InvalidArgumentError(std::to_string(f_.size()) + " fields, expected 4");
    }
    Rating r;
    int64_t rating;
    LOOM_RETURN_IF_ERROR(ParseInt64(f_[0], 10, &r.user).WithContext("user id"));
    LOOM_RETURN_IF_ERROR(ParseInt64(f_[1], 10, &r.item).WithContext("item id"));
    LOOM_RETURN_IF_ERROR(ParseInt64(f_[2], 10, &rating).WithContext("rating"));
    LOOM_RETURN_IF_ERROR(ParseInt64(f_[3], 10, &r.ts).WithContext("timestamp"));
    if (rating < 1 || rating > 5) {
      return InvalidArgumentError("rating " + std::to_string(rating) + " is not in 1..5");
    }
    if (r.ts < 0) return InvalidArgumentError("negative timestamp");
    if (!users_.count(r.user)) {
      return InvalidArgumentError("user " + std::to_string(r.user) + " is not in the user file");
    }
    if (!items_.count(r.item)) {
      return InvalidArgumentError("item " + std::to_string(r.item) + " is not in the item file");
    }
    r.rating = static_cast<int>(rating);
    r.seq = static_cast<int64_t>(ratings_.size());
    ratings_.push_back(r);
    return Status::Ok();
  });
}

StatusOr<MovieLensResult> MovieLensConverter::Run() {
  if (o_.max_history < 1) return InvalidArgumentError("max_history must be >= 1");
  LOOM_RETURN_IF_ERROR(ReadUsers());
  LOOM_RETURN_IF_ERROR(ReadItems());
  LOOM_RETURN_IF_ERROR(ReadRatings());
  const int64_t n = static_cast<int64_t>(ratings_.size());
  LOG(INFO) << "movielens: " << users_.size() << " users, " << items_.size() << " items, " << n
            << " ratings";

  // Global order and split.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const Rating &x = ratings_[a], &y = ratings_[b];
    if (x.ts != y.ts) return x.ts < y.ts;
    if (x.user != y.user) return x.user < y.user;
    if (x.item != y.item) return x.item < y.item;
    return x.seq < y.seq;
  });
  const int64_t n_train = n * 8 / 10;  // floor(0.8 N)

  // Per-user timelines ordered by (timestamp, item_id); for each rating, its user's position
  // and the number of the user's events strictly earlier.
  std::unordered_map<int64_t, std::vector<int64_t>> timeline;
  for (int64_t i = 0; i < n; ++i) timeline[ratings_[i].user].push_back(i);
  std::vector<int64_t> earlier_user(n), timeline_start(n);
  for (auto& [user, list] : timeline) {
    std::sort(list.begin(), list.end(), [&](int64_t a, int64_t b) {
      const Rating &x = ratings_[a], &y = ratings_[b];
      if (x.ts != y.ts) return x.ts < y.ts;
      if (x.item != y.item) return x.item < y.item;
      return x.seq < y.seq;
    });
    int64_t group_start = 0;
    for (size_t p = 0; p < list.size(); ++p) {
      if (p > 0 && ratings_[list[p]].ts != ratings_[list[p - 1]].ts) group_start = p;
      earlier_user[list[p]] = group_start;
    }
  }
  // Items: timestamps sorted, for "earlier events over all users".
  std::unordered_map<int64_t, std::vector<int64_t>> item_times;
  for (const Rating& r : ratings_) item_times[r.item].push_back(r.ts);
  for (auto& [item, ts] : item_times) std::sort(ts.begin(), ts.end());
  auto earlier_item = [&](const Rating& r) {
    const auto& ts = item_times[r.item];
    return static_cast<int64_t>(std::lower_bound(ts.begin(), ts.end(), r.ts) - ts.begin());
  };

  // Raw categorical values of a rating, per sparse feature (genres: the bag).
  auto hour = [](int64_t ts) { return (ts % 86400) / 3600; };
  auto weekday = [](int64_t ts) { return (ts / 86400 + 4) % 7; };  // 0 = Sunday
  auto raw = [&](const Rating& r, int f) -> std::string {
    const User& u = users_.at(r.user);
    const Item& it = items_.at(r.item);
    switch (f) {
      case kUser:
        return std::to_string(r.user);
      case kItem:
        return std::to_string(r.item);
      case kGender:
        return u.gender;
      case kAge:
        return std::to_string(u.age);
      case kOccupation:
        return u.occupation;
      case kZip3:
        return u.zip3;
      case kDecade:
        return it.decade == 0 ? std::string() : std::to_string(it.decade);
      case kHour:
        return std::to_string(hour(r.ts));
      case kWeekday:
        return std::to_string(weekday(r.ts));
      default:
        return std::string();
    }
  };

  // Vocabularies from the time-sorted train split.
  std::vector<Vocabulary> vocab(kGenres + 1);
  for (int64_t k = 0; k < n_train; ++k) {
    const Rating& r = ratings_[order[k]];
    for (int f = kUser; f < kGenres; ++f) {
      const std::string v = raw(r, f);
      if (!v.empty()) vocab[f].Add(v);  // an unknown decade stays 0
    }
    for (const std::string& g : items_.at(r.item).genres) vocab[kGenres].Add(g);
  }

  proto::DataSchema schema = MovieLensSchema(o_.variant, o_.max_history);
  for (int f = kUser; f <= kGenres; ++f) {
    schema.mutable_sparse(f)->set_vocabulary_size(vocab[f].size() + 1);
  }
  schema.mutable_sequence(kItemHistory)->set_vocabulary_size(vocab[kItem].size() + 1);
  schema.mutable_sequence(kGenreHistory)->set_vocabulary_size(vocab[kGenres].size() + 1);
  schema.mutable_sequence(kRatingHistory)->set_vocabulary_size(6);

  WriterOptions wo;
  wo.block_rows = o_.block_rows;
  wo.producer = o_.producer;
  LOOM_ASSIGN_OR_RETURN(auto train, DatasetWriter::Create(o_.out_dir + "/train", schema, wo));
  LOOM_ASSIGN_OR_RETURN(auto test, DatasetWriter::Create(o_.out_dir + "/test", schema, wo));

  MovieLensResult result;
  Example ex;
  const int64_t t = o_.max_history;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = order[k];
    const Rating& r = ratings_[i];
    const Item& item = items_.at(r.item);
    ex.Reset(schema);
    ex.label = r.rating >= 4 ? 1.f : 0.f;
    ex.group_id = r.user;
    for (int f = kUser; f < kGenres; ++f) {
      const std::string v = raw(r, f);
      ex.sparse_ids[f] = {v.empty() ? 0 : vocab[f].Get(v)};
    }
    for (const std::string& g : item.genres)
      ex.sparse_ids[kGenres].push_back(vocab[kGenres].Get(g));
    const auto& list = timeline[r.user];
    const int64_t e = earlier_user[i];
    for (int64_t p = std::max<int64_t>(0, e - t); p < e; ++p) {
      const Rating& h = ratings_[list[p]];
      const Item& hi = items_.at(h.item);
      ex.sequences[kItemHistory].push_back(vocab[kItem].Get(std::to_string(h.item)));
      ex.sequences[kGenreHistory].push_back(hi.genres.empty() ? 0
                                                              : vocab[kGenres].Get(hi.genres[0]));
      ex.sequences[kRatingHistory].push_back(h.rating);
    }
    ex.dense[0] = static_cast<float>(std::log1p(static_cast<double>(e)));
    ex.dense[1] = static_cast<float>(std::log1p(static_cast<double>(earlier_item(r))));
    if (k < n_train) {
      LOOM_RETURN_IF_ERROR(train->Add(ex));
      result.train_positives += r.rating >= 4;
    } else {
      LOOM_RETURN_IF_ERROR(test->Add(ex));
      result.test_positives += r.rating >= 4;
    }
  }
  LOOM_RETURN_IF_ERROR(train->Close());
  LOOM_RETURN_IF_ERROR(test->Close());

  result.ratings = n;
  result.train_rows = n_train;
  result.test_rows = n - n_train;
  result.bad_records = bad_.count();
  result.schema = schema;
  result.train_files = train->files();
  result.test_files = test->files();

  LOOM_RETURN_IF_ERROR(WriteTextProto(o_.out_dir + "/schema.pbtxt", schema));
  std::ostringstream js;
  js << "{\n  \"protocol\": \"movielens-ctr-v1\",\n  \"variant\": \""
     << (o_.variant == MovieLensVariant::k100K ? "100k" : "1m") << "\",\n  \"ratings\": " << n
     << ",\n  \"train_rows\": " << result.train_rows << ",\n  \"test_rows\": " << result.test_rows
     << ",\n  \"train_positives\": " << result.train_positives
     << ",\n  \"test_positives\": " << result.test_positives
     << ",\n  \"bad_records\": " << result.bad_records << ",\n  \"vocabulary_sizes\": {";
  for (int f = 0; f < schema.sparse_size(); ++f) {
    js << (f ? ", " : "") << "\"" << schema.sparse(f).name()
       << "\": " << schema.sparse(f).vocabulary_size();
  }
  js << "}\n}\n";
  LOOM_RETURN_IF_ERROR(WriteStringToFile(o_.out_dir + "/movielens.json", js.str()));
  LOG(INFO) << "movielens: wrote " << result.train_rows << " train and " << result.test_rows
            << " test samples to " << o_.out_dir;
  return result;
}

}  // namespace

StatusOr<MovieLensVariant> ParseMovieLensVariant(const std::string& name) {
  std::string s = name;
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "100k") return MovieLensVariant::k100K;
  if (s == "1m") return MovieLensVariant::k1M;
  return InvalidArgumentError("MovieLens variant '" + name + "' is not 100k or 1m");
}

proto::DataSchema MovieLensSchema(MovieLensVariant variant, int max_history) {
  proto::DataSchema s;
  s.set_name(variant == MovieLensVariant::k100K ? "movielens-100k-ctr-v1" : "movielens-1m-ctr-v1");
  s.set_label("label");
  s.set_group_id("user_id");
  s.add_dense()->set_name("log1p_user_earlier_events");
  s.add_dense()->set_name("log1p_item_earlier_events");
  for (const char* name : {"user_id", "item_id", "gender", "age", "occupation", "zip3",
                           "release_decade", "hour", "weekday"}) {
    s.add_sparse()->set_name(name);
  }
  auto* genres = s.add_sparse();
  genres->set_name("genres");
  genres->set_multi_hot(true);
  genres->set_pooling(proto::SparseFeatureSpec::POOLING_MEAN);
  auto* items = s.add_sequence();
  items->set_name("item_history");
  items->set_max_length(max_history);
  items->set_shares_table_with("item_id");
  auto* genre_history = s.add_sequence();
  genre_history->set_name("genre_history");
  genre_history->set_max_length(max_history);
  genre_history->set_shares_table_with("genres");
  auto* rating_history = s.add_sequence();
  rating_history->set_name("rating_history");
  rating_history->set_max_length(max_history);
  return s;
}

StatusOr<MovieLensResult> ConvertMovieLens(const MovieLensOptions& options) {
  MovieLensConverter c(options);
  return c.Run();
}

}  // namespace loom::data
