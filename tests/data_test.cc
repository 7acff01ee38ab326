// Fashion-MNIST from Debian's package, CIFAR-10's binary format, image folders, and the
// distributed sampler.
#include "core/config.h"
#include "core/data.h"
#include "core/error.h"
#include "core/image_decode.h"
#include "core/image_folder.h"
#include "core/input_pipeline.h"
#include "core/tar_shards.h"
#include "tests/test_util.h"

#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>

namespace dshost {
namespace {

TEST(FashionMnist, ReadsBothSplitsWithBalancedClasses) {
  const ImageDataset d = load_fashion_mnist(test::fashion_mnist_dir(), "test");
  EXPECT_EQ(d.train.images.sizes(), at::IntArrayRef({60000, 1, 28, 28}));
  EXPECT_EQ(d.test.images.sizes(), at::IntArrayRef({10000, 1, 28, 28}));
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  EXPECT_TRUE(at::bincount(d.train.labels).eq(6000).all().item<bool>());
  EXPECT_TRUE(at::bincount(d.test.labels).eq(1000).all().item<bool>());
  // Pixel statistics match the normalisation constants used for training.
  const double mean = d.train.images.to(at::kDouble).mean().item<double>() / 255.0;
  EXPECT_NEAR(mean, d.mean, 1e-3);
}

TEST(FashionMnist, TruncatedFileIsRefusedNamingIt) {
  const std::string dir = test::scratch_dir("fmnist_truncated");
  for (const char* name : {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                           "t10k-labels-idx1-ubyte.gz"})
    std::filesystem::copy_file(test::fashion_mnist_dir() + "/" + name, dir + "/" + name);
  gzFile out = gzopen((dir + "/train-images-idx3-ubyte.gz").c_str(), "wb");
  const unsigned char header[16] = {0, 0, 8, 3, 0, 0, 0xea, 0x60, 0, 0, 0, 28, 0, 0, 0, 28};
  gzwrite(out, header, sizeof(header));
  gzwrite(out, std::string(1000, '\0').data(), 1000);  // 60000 images promised, 1000 bytes given
  gzclose(out);
  try {
    load_fashion_mnist(dir, "m.toml:3:1");
    FAIL() << "a truncated file loaded";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("train-images-idx3-ubyte.gz: not a valid IDX file "
                                         "(holds 1000 data bytes, its header promises [60000, 28, 28] = 47040000)"),
              std::string::npos) << e.what();
  }
}

// CIFAR-10 binary batches made from real images: Fashion-MNIST's, padded to 32 x 32 and
// given three planes (R = G = B), `per_file` records in each of the six files.
std::string write_cifar_folder(const std::string& name, int64_t per_file) {
  const std::string dir = test::scratch_dir(name);
  const ImageDataset fashion = load_fashion_mnist(test::fashion_mnist_dir(), "test");
  const char* files[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                         "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
  for (int f = 0; f < 6; ++f) {
    const Split& from = f < 5 ? fashion.train : fashion.test;
    const int64_t first = f < 5 ? f * per_file : 0;
    const at::Tensor images = at::constant_pad_nd(from.images.narrow(0, first, per_file), {2, 2, 2, 2})
                                  .expand({per_file, 3, 32, 32});
    const at::Tensor records = at::cat({from.labels.narrow(0, first, per_file).to(at::kByte).unsqueeze(1),
                                        images.reshape({per_file, 3072})}, 1).contiguous();
    test::write_file(dir + "/" + files[f], std::string(static_cast<const char*>(records.data_ptr()),
                                                       static_cast<size_t>(records.numel())));
  }
  return dir;
}

TEST(Cifar10, ReadsRecordsAsLabelsAndThreePlanes) {
  const std::string dir = write_cifar_folder("cifar_read", 100);
  const ImageDataset d = load_cifar10(dir);
  const ImageDataset fashion = load_fashion_mnist(test::fashion_mnist_dir(), "test");
  EXPECT_EQ(d.train.images.sizes(), at::IntArrayRef({500, 3, 32, 32}));
  EXPECT_EQ(d.test.images.sizes(), at::IntArrayRef({100, 3, 32, 32}));
  EXPECT_TRUE(d.train.labels.equal(fashion.train.labels.narrow(0, 0, 500)));
  EXPECT_TRUE(d.train.images[137][2].narrow(0, 2, 28).narrow(1, 2, 28).equal(fashion.train.images[137][0]));
  EXPECT_EQ(d.sample_shape, (std::vector<int64_t>{3, 32, 32}));
}

TEST(Cifar10, APartialRecordOrAnUnknownLabelIsRefusedNamingTheFile) {
  const std::string dir = write_cifar_folder("cifar_bad", 10);
  const std::string batch = dir + "/data_batch_3.bin";
  std::filesystem::resize_file(batch, 3073 * 10 - 5);
  EXPECT_THROW(
      {
        try {
          load_cifar10(dir);
        } catch (const UserError& e) {
          EXPECT_EQ(std::string(e.what()), batch + ": not a CIFAR-10 binary batch (30725 bytes, "
                                                   "not a whole number of 3073-byte records)");
          throw;
        }
      },
      UserError);
  write_cifar_folder("cifar_bad", 10);  // whole again
  std::string bytes = test::read_file(dir + "/test_batch.bin");
  bytes[3073 * 4] = 12;  // record 4's label
  test::write_file(dir + "/test_batch.bin", bytes);
  try {
    load_cifar10(dir);
    ADD_FAILURE() << "a label of 12 was read";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), dir + "/test_batch.bin: record 4 has label 12; CIFAR-10 labels are 0-9");
  }
}

// `dshost run` on a CIFAR-10 folder: the basic CNN at 3 x 32 x 32 learns the images (made
// from Fashion-MNIST, so its accuracy is comparable: well above chance in 150 steps).
TEST(Cifar10Training, TheBasicCnnLearnsFromACifarFolder) {
  const std::string data = write_cifar_folder("cifar_training_data", 1000);
  std::string summary;
  const auto losses = test::train_quickstart(
      "cifar10", {"data.dataset=\"cifar10\"", "data.path=\"" + data + "\"", "model.in_channels=3",
                  "model.image_size=32", "train.max_steps=150", "train.log_every=50"},
      &summary);
  ASSERT_EQ(losses.size(), 150u);
  EXPECT_GT(nlohmann::json::parse(summary)["test_accuracy"].get<double>(), 0.6) << summary;
}

// An image folder of real images in JPEG and PNG (tests/make_image_folder.py).
std::string make_image_folder(const std::string& name, int train_per_class, int val_per_class) {
  const std::string dir = test::scratch_dir(name);
  const test::Ran made = test::run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/make_image_folder.py", dir,
                                    std::to_string(train_per_class), std::to_string(val_per_class)});
  EXPECT_EQ(made.exit_code, 0) << made.err;
  return dir;
}

// Classes are the train folders in name order; files are taken by their extension without
// being opened (broken.jpg is listed, notes.txt is not); a PNG decodes to its exact pixels,
// grey made RGB, and broken.jpg does not decode.
TEST(ImageFolder, ListsImageFilesByExtensionAndDecodesThem) {
  const std::string dir = make_image_folder("image_folder_read", 3, 2);
  test::write_file(dir + "/train/bag/notes.txt", "not an image\n");
  const ImageFiles train = scan_image_folder(dir + "/train");
  EXPECT_EQ(train.classes, (std::vector<std::string>{"bag", "boot", "coat", "dress", "pullover", "sandal",
                                                     "shirt", "sneaker", "trouser", "tshirt"}));
  EXPECT_EQ(train.paths.size(), 31u);
  EXPECT_NE(std::find(train.paths.begin(), train.paths.end(), dir + "/train/tshirt/broken.jpg"), train.paths.end());
  for (const auto& p : train.paths) EXPECT_EQ(p.find("notes.txt"), std::string::npos);
  const ImageDataset data = load_image_folder(dir);
  EXPECT_EQ(data.test.size(), 20);
  const RgbImage png = EncodedImage(dir + "/train/bag/00001.png").decode();
  EXPECT_EQ(png.height, 36);
  EXPECT_EQ(png.width, 40);
  const at::Tensor pixels = at::from_blob(const_cast<uint8_t*>(png.pixels.data()), {36, 40, 3}, at::kByte);
  EXPECT_TRUE(pixels.select(2, 0).equal(pixels.select(2, 2)));
  EXPECT_GT(pixels.max().item<int64_t>(), 100);
  try {
    EncodedImage(dir + "/train/tshirt/broken.jpg").decode();
    ADD_FAILURE() << "broken.jpg decoded";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/train/tshirt/broken.jpg: not a JPEG or PNG image that "
                                         "can be decoded ("), std::string::npos)
        << e.what();
  }
}

// More files that do not decode than data.max_bad_files stop the run, naming the count and
// the last file.
TEST(ImageFolder, MoreUndecodableFilesThanAllowedStopTheRun) {
  const std::string dir = make_image_folder("image_folder_bad_files", 2, 1);
  test::write_file(dir + "/train/bag/broken.png", "not a PNG either");
  const ImageDataset data = load_image_folder(dir, /*max_bad_files=*/1);
  const auto& files = data.train.files;
  const auto index = [&](const std::string& name) {
    return static_cast<int64_t>(std::find(files.begin(), files.end(), dir + "/train/" + name) - files.begin());
  };
  at::Tensor inputs = at::zeros({1, 3, 32, 32}), targets = at::zeros({1}, at::kLong);
  fill_batch(data, data.train, {index("tshirt/broken.jpg")}, 0, 1, inputs, targets, 7);
  EXPECT_EQ(data.skipped->count(), 1);
  try {
    fill_batch(data, data.train, {index("bag/broken.png")}, 0, 1, inputs, targets, 7);
    ADD_FAILURE() << "a second undecodable file passed a limit of 1";
  } catch (const UserError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_EQ(std::string(e.what()), "2 image files did not decode (the last: " + dir +
                                         "/train/bag/broken.png), more than data.max_bad_files = 1; "
                                         "remove or replace them, or raise data.max_bad_files");
  }
}

// A file whose header reads but whose data does not decode (a PNG cut short after the scan)
// is skipped while training: its row holds the next sample's image and label instead.
TEST(ImageFolder, AFileThatNoLongerDecodesGivesItsRowToTheNextSample) {
  const std::string dir = make_image_folder("image_folder_truncated", 3, 1);
  const ImageDataset data = load_image_folder(dir);
  const auto& files = data.train.files;
  const int64_t cut = std::find(files.begin(), files.end(), dir + "/train/coat/00003.png") - files.begin();
  ASSERT_LT(cut + 1, static_cast<int64_t>(files.size()));
  std::filesystem::resize_file(files[cut], std::filesystem::file_size(files[cut]) / 2);
  const auto batch = [&](std::vector<int64_t> indices) {
    at::Tensor inputs = at::zeros({2, 3, 32, 32}), targets = at::full({2}, -1, at::kLong);
    fill_batch(data, data.train, indices, 0, 2, inputs, targets, 7);
    return std::pair{inputs, targets};
  };
  const auto [with_cut, cut_labels] = batch({0, cut});
  const auto [next, next_labels] = batch({0, cut + 1});
  EXPECT_NE(data.train.labels[cut].item<int64_t>(), data.train.labels[cut + 1].item<int64_t>());
  EXPECT_EQ(cut_labels[1].item<int64_t>(), data.train.labels[cut + 1].item<int64_t>());
  EXPECT_TRUE(with_cut[1].equal(next[1]));
  EXPECT_TRUE(with_cut[0].equal(next[0]));
}

// A JPEG cut short and an empty file are skipped and counted, each named once.
TEST(ImageFolder, ATruncatedJpegAndAnEmptyFileAreSkippedAndCounted) {
  const std::string dir = make_image_folder("image_folder_cut_jpeg", 2, 1);
  const ImageDataset data = load_image_folder(dir);
  const auto& files = data.train.files;
  const auto index = [&](const std::string& name) {
    return static_cast<int64_t>(std::find(files.begin(), files.end(), dir + "/train/" + name) - files.begin());
  };
  const std::string jpeg = dir + "/train/coat/00002.jpg";
  std::filesystem::resize_file(jpeg, std::filesystem::file_size(jpeg) * 2 / 3);
  std::filesystem::resize_file(dir + "/train/bag/00002.jpg", 0);
  std::vector<uint8_t> pixels(3 * 32 * 32);
  for (const char* name : {"coat/00002.jpg", "bag/00002.jpg", "coat/00002.jpg"})
    EXPECT_EQ(image_sample(data.train, *data.skipped, index(name), 32, 7, pixels.data()), index(name) + 1) << name;
  EXPECT_EQ(data.skipped->count(), 2);
}

// Shards written by Python's tarfile (PAX format, a member name longer than ustar's 100
// bytes) read as WebDataset samples, in member order; what is not a shard set is named.
TEST(WebDataset, ReadsPythonsTarFilesAndNamesWhatIsWrong) {
  const std::string dir = test::scratch_dir("webdataset_read");
  const std::string long_key = "n01440764/" + std::string(120, 'x');
  const test::Ran made = test::run({"/usr/bin/python3", "-c", R"(
import io, sys, tarfile
def shard(path, members):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
d, key = sys.argv[1], sys.argv[2]
shard(f"{d}/good-000000.tar", [(key + ".jpg", b"\xff\xd8\xff not really"), (key + ".cls", b"7"), ("b.png", b"png"), ("b.cls", b" 3\n"), ("b.json", b"{}")])
shard(f"{d}/good-000001.tar", [("c.JPEG", b"jpeg"), ("c.cls", b"0")])
shard(f"{d}/unlabelled-000000.tar", [("a.jpg", b"jpeg")])
shard(f"{d}/bad_label-000000.tar", [("a.jpg", b"jpeg"), ("a.cls", b"cat")])
open(f"{d}/text-000000.tar", "w").write("not a tar file at all, but long enough to hold a header " * 20)
)", dir, long_key});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const ShardIndex index = index_shards(expand_shards(dir + "/good-{000000..000001}.tar", "m.toml:3:8"));
  ASSERT_EQ(index.samples.size(), 3u);
  EXPECT_EQ(index.samples[0].member, long_key + ".jpg");
  EXPECT_EQ(index.samples[0].label, 7);
  EXPECT_EQ(read_bytes(index.shards[0], index.samples[0].offset, index.samples[0].size), "\xff\xd8\xff not really");
  EXPECT_EQ(index.samples[1].label, 3);
  EXPECT_EQ(index.samples[2].shard, 1);
  EXPECT_EQ(index.samples[2].member, "c.JPEG");
  const auto refusal = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(refusal([&] { expand_shards(dir + "/good-{000000..000002}.tar", "m.toml:3:8"); }),
            "m.toml:3:8: error: shard " + dir + "/good-000002.tar of '" + dir +
                "/good-{000000..000002}.tar' does not exist; every shard of the range must");
  EXPECT_EQ(refusal([&] { expand_shards(dir + "/good-{000000.000001}.tar", "m.toml:3:8"); }),
            "m.toml:3:8: error: '" + dir + "/good-{000000.000001}.tar' has no brace range of shard numbers, "
            "as in train-{000000..000127}.tar");
  EXPECT_EQ(refusal([&] { index_shards({dir + "/text-000000.tar"}); }),
            dir + "/text-000000.tar is not a tar file (a shard must be one; dshost pack writes them)");
  EXPECT_EQ(refusal([&] { index_shards({dir + "/unlabelled-000000.tar"}); }),
            dir + "/unlabelled-000000.tar: sample 'a' has no .cls label (a WebDataset sample is KEY.jpg or "
            "KEY.png with KEY.cls)");
  EXPECT_EQ(refusal([&] { index_shards({dir + "/bad_label-000000.tar"}); }),
            dir + "/bad_label-000000.tar: a.cls holds 'cat', not a class id (0, 1, ...)");
}

// `dshost pack --max-side` stores images larger than that (these are 40 x 36) resized to it
// as JPEG, the rest of a shard set as without it; a file that does not decode is kept as it
// is, for training to skip.
TEST(WebDataset, PackMakesLargerImagesTheMaxSide) {
  const std::string data = make_image_folder("webdataset_pack_max_side", 2, 1);
  const std::string shards = test::scratch_dir("webdataset_pack_max_side_out") + "/small";
  const test::Ran packed = test::dshost({"pack", data, shards, "--max-side", "20"});
  ASSERT_EQ(packed.exit_code, 0) << packed.err;
  const ShardIndex index = index_shards({shards + "-train-000000.tar"});
  ASSERT_EQ(index.samples.size(), 21u);
  int broken = 0;
  for (const ShardSample& s : index.samples) {
    const std::string bytes = read_bytes(index.shards[0], s.offset, s.size);
    try {
      const EncodedImage image(s.member, bytes);
      const RgbImage decoded = image.decode();
      EXPECT_EQ(decoded.width, 20) << s.member;
      EXPECT_EQ(decoded.height, 18) << s.member;
      EXPECT_EQ(s.member.substr(s.member.size() - 4), ".jpg") << "PNGs are stored as JPEG too";
    } catch (const UserError&) {
      ++broken;
      EXPECT_EQ(bytes, test::read_file(data + "/train/tshirt/broken.jpg"));
    }
  }
  EXPECT_EQ(broken, 1);
}

// An IDX header whose sizes multiply past int64 is a bad file, named.
TEST(FashionMnist, AnIdxHeaderThatOverflowsIsABadFile) {
  const std::string dir = test::scratch_dir("idx_overflow");
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    std::filesystem::copy_file(test::fashion_mnist_dir() + "/" + name, dir + "/" + name);
  const std::string header("\0\0\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 16);
  gzFile out = gzopen((dir + "/train-images-idx3-ubyte.gz").c_str(), "wb");
  gzwrite(out, header.data(), static_cast<unsigned>(header.size()));
  gzwrite(out, "abcd", 4);
  gzclose(out);
  try {
    load_fashion_mnist(dir, "m.toml:3:1");
    ADD_FAILURE() << "an overflowing header was read";
  } catch (const UserError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    EXPECT_NE(std::string(e.what()).find(dir + "/train-images-idx3-ubyte.gz: not a valid IDX file (holds 4 "
                                         "data bytes, its header promises [4294967295, 4294967295, "
                                         "4294967295] = "), std::string::npos) << e.what();
  }
}

// The draws torchvision made (tests/crop_boxes.py), replayed.
class RecordedDraws : public CropDraws {
 public:
  explicit RecordedDraws(const nlohmann::json& c) : tries_(c["tries"]), offsets_(c["offsets"]) {}
  double area_fraction() override { return tries_.at(next_try_)[0]; }
  double aspect_ratio() override { return tries_.at(next_try_++)[1]; }
  int64_t offset(int64_t) override { return offsets_.at(next_offset_++); }

 private:
  nlohmann::json tries_, offsets_;
  size_t next_try_ = 0, next_offset_ = 0;
};

// The same draws give torchvision's RandomResizedCrop box, on sizes from square to far past
// the allowed aspect ratios (where every try fails and the center crop is taken).
TEST(ImageFolder, CropBoxesAreTorchvisionsForTheSameDraws) {
  const test::Ran fixtures = test::run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/crop_boxes.py"});
  ASSERT_EQ(fixtures.exit_code, 0) << fixtures.err;
  const auto cases = nlohmann::json::parse(fixtures.out);
  int fallbacks = 0;
  for (const auto& c : cases) {
    RecordedDraws draws(c);
    const CropBox b = random_resized_crop_box(c["height"], c["width"], draws);
    EXPECT_EQ((std::vector<int64_t>{b.top, b.left, b.height, b.width}), c["box"].get<std::vector<int64_t>>())
        << c.dump();
    fallbacks += c["offsets"].empty();
  }
  EXPECT_EQ(cases.size(), 600u);
  EXPECT_GT(fallbacks, 100) << "the center-crop fallback must be covered";
}

// Training crops and flips follow the seed (the same seed, the same picture); evaluation is
// a fixed center crop.
TEST(ImageFolder, AugmentationFollowsItsSeedAndEvaluationIsFixed) {
  const std::string dir = make_image_folder("image_folder_augment", 1, 1);
  const EncodedImage image(dir + "/train/coat/00001.png");
  const auto sample = [&](uint64_t seed) {
    at::Tensor out = at::empty({3, 32, 32}, at::kByte);
    if (seed == 0) evaluation_sample(image, 32, out.data_ptr<uint8_t>());
    else training_sample(image, 32, seed, out.data_ptr<uint8_t>());
    return out;
  };
  const at::Tensor a = sample(7);
  EXPECT_TRUE(a.equal(sample(7)));
  EXPECT_FALSE(a.equal(sample(8)));
  EXPECT_TRUE(sample(0).equal(sample(0)));
  EXPECT_GT(a.max().item<int64_t>(), 100);
}

// Files as ImageNet has them (RGB, grey and CMYK JPEGs, PNG content behind a .JPEG name)
// decode to Pillow's convert("RGB") pixels, and crops, flips and evaluation's resize and
// center crop give torchvision's pixels (tests/image_transforms.py): exactly, to rounding,
// where the crop is decoded at full size. Where libjpeg-turbo's DCT scaling decodes it
// smaller (here the whole 500 x 375 picture at 5/8 and evaluation's at 6/8) the resize
// starts from another sampling of the picture: within 5 levels of 255 on average and 96 at
// most on this picture of enlarged Fashion-MNIST tiles, whose sharp edges are the worst
// case for it (measured: 4.5 and 80).
TEST(ImageFolder, DecodesAndCropsAsTorchvisionDoes) {
  const std::string dir = test::scratch_dir("image_transforms");
  const test::Ran fixtures = test::run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/image_transforms.py", dir, "224"});
  ASSERT_EQ(fixtures.exit_code, 0) << fixtures.err;
  const auto raw = [](const std::string& path, at::IntArrayRef shape) {
    const std::string bytes = test::read_file(path);
    return at::from_blob(const_cast<char*>(bytes.data()), shape, at::kByte).to(at::kInt);
  };
  int scaled = 0, whole = 0;
  for (const auto& c : nlohmann::json::parse(fixtures.out)) {
    const std::string file = c["file"];
    const EncodedImage image(file);
    ASSERT_EQ(image.height(), c["height"].get<int64_t>()) << file;
    ASSERT_EQ(image.width(), c["width"].get<int64_t>()) << file;
    const RgbImage decoded = image.decode();
    const at::Tensor ours = at::from_blob(const_cast<uint8_t*>(decoded.pixels.data()),
                                          {image.height(), image.width(), 3}, at::kByte).to(at::kInt);
    EXPECT_LE((ours - raw(c["rgb"], {image.height(), image.width(), 3})).abs().max().item<int>(), 1) << file;
    const auto compare = [&](const at::Tensor& got, const std::string& expected, bool full_size, const std::string& what) {
      const at::Tensor difference = (got.to(at::kInt) - raw(expected, {3, 224, 224})).abs();
      const double mean = difference.to(at::kDouble).mean().item<double>();
      const int most = difference.max().item<int>();
      if (full_size) {
        ++whole;
        EXPECT_LE(most, 1) << what;
      } else {
        ++scaled;
        EXPECT_LE(mean, 5.0) << what;
        EXPECT_LE(most, 96) << what;
      }
    };
    for (const auto& crop : c["crops"]) {
      const auto b = crop["box"].get<std::vector<int64_t>>();
      at::Tensor out = at::empty({3, 224, 224}, at::kByte);
      resized_crop(image, CropBox{b[0], b[1], b[2], b[3]}, 224, crop["flip"], out.data_ptr<uint8_t>());
      const bool full_size = file.find("png") != std::string::npos || b[2] < 224 || b[3] < 224;
      compare(out, crop["pixels"], full_size, file + " crop " + crop.dump());
    }
    at::Tensor out = at::empty({3, 224, 224}, at::kByte);
    evaluation_sample(image, 224, out.data_ptr<uint8_t>());
    compare(out, c["eval"], file.find("png") != std::string::npos, file + " evaluation");
  }
  EXPECT_GT(scaled, 10);
  EXPECT_GT(whole, 10);
}

// `dshost run` on an image folder: the broken file is named in a warning and the basic CNN
// learns the images (chance is 0.1).
TEST(ImageFolderTraining, TheBasicCnnLearnsFromJpegAndPngFolders) {
  const std::string data = make_image_folder("image_folder_training_data", 60, 20);
  const std::string dir = test::scratch_dir("training_image_folder");
  const test::Ran r = test::dshost(
      {"run", test::quickstart_manifest(), "--set", "run.output_dir=\"" + dir + "\"", "--set",
       "data.dataset=\"image_folder\"", "--set", "data.path=\"" + data + "\"", "--set",
       "data.image_size=32", "--set", "model.in_channels=3", "--set", "model.image_size=32", "--set",
       "train.epochs=12", "--set", "train.micro_batch_size=16", "--set", "scheduler.warmup_steps=10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("skipping " + data + "/train/tshirt/broken.jpg: not a JPEG or PNG image that "
                       "can be decoded ("), std::string::npos) << r.err;
  const auto summary = nlohmann::json::parse(test::read_file(dir + "/quickstart/summary.json"));
  EXPECT_GE(summary["skipped_files"].get<int64_t>(), 1) << summary.dump();
  EXPECT_GT(summary["test_accuracy"].get<double>(), 0.5) << r.err;
}

// The input pipeline's batches are the same to the last bit for 1, 2 and 4 workers, with
// and without prefetching, across epochs (a new order each), and equal to fill_batch's, for
// training and for evaluation (whose last batch is short).
TEST(InputPipeline, BatchesAreTheSameForAnyNumberOfWorkers) {
  const std::string dir = make_image_folder("input_pipeline_workers", 12, 1);
  const ImageDataset data = load_image_folder(dir);
  const int64_t rows = 8;
  const auto batches = [&](int workers, int prefetch) {
    InputPipeline pipeline(data, rows, 32, workers, prefetch, at::kCPU);
    std::vector<at::Tensor> out;
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      const auto order = std::make_shared<const std::vector<int64_t>>(
          shard_indices(data.train.size(), 0, 1, 5, epoch, true, false));
      for (int64_t first = 0; first + rows <= static_cast<int64_t>(order->size()); first += rows) {
        at::Tensor inputs = at::zeros({rows, 3, 32, 32}), targets = at::zeros({rows}, at::kLong);
        pipeline.load(data.train, order, first, rows, 1000 + epoch, inputs, targets);
        out.push_back(at::cat({inputs.flatten(), targets.to(at::kFloat)}));
      }
    }
    return out;
  };
  const auto one = batches(1, 0);
  ASSERT_EQ(one.size(), 30u);  // 121 files (one broken): 15 batches an epoch
  for (const auto& [workers, prefetch] : std::vector<std::pair<int, int>>{{2, 4}, {4, 4}, {4, 0}, {1, 2}}) {
    const auto other = batches(workers, prefetch);
    ASSERT_EQ(other.size(), one.size());
    for (size_t i = 0; i < one.size(); ++i)
      EXPECT_TRUE(other[i].equal(one[i])) << workers << " workers, prefetch " << prefetch << ", batch " << i;
  }
  const auto order = shard_indices(data.train.size(), 0, 1, 5, 0, true, false);
  at::Tensor inputs = at::zeros({rows, 3, 32, 32}), targets = at::zeros({rows}, at::kLong);
  fill_batch(data, data.train, order, rows, rows, inputs, targets, 1000);
  EXPECT_TRUE(at::cat({inputs.flatten(), targets.to(at::kFloat)}).equal(one[1]));

  // Evaluation's batches of the test split (10 samples: 8, then 2), untransformed by draws.
  InputPipeline pipeline(data, rows, 32, 3, 2, at::kCPU);
  const auto test_order = std::make_shared<const std::vector<int64_t>>(shard_indices(10, 0, 1, 0, 0, false, false));
  for (const int64_t first : {0, 8}) {
    const int64_t n = std::min<int64_t>(rows, 10 - first);
    at::Tensor in = at::zeros({rows, 3, 32, 32}), out = at::zeros({rows}, at::kLong);
    at::Tensor expected_in = at::zeros({rows, 3, 32, 32}), expected_out = at::zeros({rows}, at::kLong);
    pipeline.load(data.test, test_order, first, n, 0, in, out);
    fill_batch(data, data.test, *test_order, first, n, expected_in, expected_out);
    EXPECT_TRUE(in.equal(expected_in)) << first;
    EXPECT_TRUE(out.equal(expected_out)) << first;
  }
}

// `dshost pack` writes an image folder as shards (several, with its broken file), and
// training from them gives the folder's losses and test accuracy to the last bit.
TEST(WebDatasetTraining, PackedShardsTrainAsTheFolderDoes) {
  const std::string data = make_image_folder("webdataset_folder", 12, 3);
  const std::string shards = test::scratch_dir("webdataset_shards") + "/fmnist";
  const test::Ran packed = test::dshost({"pack", data, shards, "--samples-per-shard", "50"});
  ASSERT_EQ(packed.exit_code, 0) << packed.err;
  EXPECT_NE(packed.out.find("packed 121 training and 30 test samples of " + data + " (10 classes); in the "
                            "manifest:\n  [data]\n  dataset = \"webdataset\"\n  path = \"" + shards +
                            "-train-{000000..000002}.tar\"\n  test_path = \"" + shards + "-val-000000.tar\"\n"),
            std::string::npos) << packed.out;
  const std::vector<std::string> common{"data.image_size=32", "model.in_channels=3", "model.image_size=32",
                                        "train.epochs=2", "train.micro_batch_size=8", "train.grad_accum_steps=2",
                                        "train.log_every=1"};
  const auto train = [&](const std::string& name, std::vector<std::string> sets, std::string* summary) {
    sets.insert(sets.end(), common.begin(), common.end());
    return test::train_quickstart(name, sets, summary);
  };
  std::string folder_summary, shard_summary;
  const auto folder = train("webdataset_from_folder", {"data.dataset=\"image_folder\"", "data.path=\"" + data + "\""},
                            &folder_summary);
  const auto shard = train("webdataset_from_shards", {"data.dataset=\"webdataset\"",
                           "data.path=\"" + shards + "-train-{000000..000002}.tar\"",
                           "data.test_path=\"" + shards + "-val-000000.tar\""}, &shard_summary);
  ASSERT_EQ(folder.size(), 6u);  // 3 steps an epoch: 61 samples a rank, 16 a step
  EXPECT_EQ(shard, folder);
  const auto accuracy = [](const std::string& s) { return nlohmann::json::parse(s)["test_accuracy"].get<double>(); };
  EXPECT_EQ(accuracy(shard_summary), accuracy(folder_summary));
  const auto skipped = [](const std::string& s) { return nlohmann::json::parse(s)["skipped_files"].get<int64_t>(); };
  EXPECT_GE(skipped(shard_summary), 1);
  EXPECT_EQ(skipped(shard_summary), skipped(folder_summary));
}

// A batch gathered from a device-resident split does not wait for the device: fill_batch
// returns while earlier work still runs on the stream (its index copy from pageable memory
// used to synchronise the stream every step), and the batch is the one gathered on the host.
TEST(DeviceBatches, GatheringABatchDoesNotWaitForTheDevice) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Device cuda(at::kCUDA, 0);
  const ImageDataset on_host = load_fashion_mnist(test::fashion_mnist_dir(), "test");
  ImageDataset on_device = on_host;
  keep_on_device(on_device, cuda);
  const auto order = shard_indices(on_host.train.size(), 0, 1, 5, 0, true, true);
  const std::vector<int64_t> shape{64, 1, 28, 28};
  at::Tensor inputs = at::zeros(shape, cuda);
  at::Tensor targets = at::zeros({64}, at::TensorOptions(cuda).dtype(at::kLong));
  fill_batch(on_device, on_device.train, order, 0, 64, inputs, targets);  // allocations made

  at::Tensor busy = at::randn({4096, 4096}, cuda);
  for (int i = 0; i < 50; ++i) busy = at::mm(busy, busy).div_(64);  // tens of ms on the stream
  c10::Event busy_done(at::kCUDA);
  busy_done.record(c10::impl::getDeviceGuardImpl(at::kCUDA)->getStream(cuda));
  fill_batch(on_device, on_device.train, order, 64, 64, inputs, targets);
  EXPECT_FALSE(busy_done.query()) << "fill_batch waited for the device";

  at::Tensor host_inputs = at::zeros(shape), host_targets = at::zeros({64}, at::kLong);
  fill_batch(on_host, on_host.train, order, 64, 64, host_inputs, host_targets);
  EXPECT_TRUE(targets.cpu().equal(host_targets));
  EXPECT_LT((inputs.cpu() - host_inputs).abs().max().item<float>(), 1e-6);
}

TEST(Sampler, ShardsAreDisjointAndCoverEverySample) {
  const int64_t n = 1000;
  std::set<int64_t> seen;
  for (int rank = 0; rank < 4; ++rank)
    for (int64_t i : shard_indices(n, rank, 4, 7, 0, true, true)) EXPECT_TRUE(seen.insert(i).second);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), n);
}

TEST(Sampler, PadsByWrappingSoEveryRankGetsAsMany) {
  const auto a = shard_indices(10, 0, 3, 1, 0, true, true);
  const auto c = shard_indices(10, 2, 3, 1, 0, true, true);
  EXPECT_EQ(a.size(), 4u);
  EXPECT_EQ(c.size(), 4u);
  EXPECT_EQ(shard_indices(10, 2, 3, 1, 0, false, false).size(), 3u);
}

TEST(Sampler, ReshufflesEachEpochAndRepeatsForTheSameSeed) {
  const auto e0 = shard_indices(5000, 1, 2, 42, 0, true, true);
  EXPECT_EQ(e0, shard_indices(5000, 1, 2, 42, 0, true, true));
  EXPECT_NE(e0, shard_indices(5000, 1, 2, 42, 1, true, true));
  EXPECT_NE(e0, shard_indices(5000, 1, 2, 43, 0, true, true));
}

TEST(Sampler, TwoRanksTogetherSeeWhatOneRankSees) {
  // Step s of 2 ranks x 32 covers the same 64 samples as step s of 1 rank x 64.
  const auto one = shard_indices(60000, 0, 1, 3, 2, true, true);
  const auto r0 = shard_indices(60000, 0, 2, 3, 2, true, true);
  const auto r1 = shard_indices(60000, 1, 2, 3, 2, true, true);
  for (int64_t step = 0; step < 5; ++step) {
    std::multiset<int64_t> a(one.begin() + step * 64, one.begin() + step * 64 + 64), b;
    b.insert(r0.begin() + step * 32, r0.begin() + step * 32 + 32);
    b.insert(r1.begin() + step * 32, r1.begin() + step * 32 + 32);
    EXPECT_EQ(a, b);
  }
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  const OptimizerConfig opt{"adamw", 1.0, 0.9, 0.999, 1e-8, 0, 0};
  const SchedulerConfig sched{10, "cosine", 0.1};
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 9, 110), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(opt, sched, 10, 110), 1.0);
  EXPECT_NEAR(learning_rate(opt, sched, 60, 110), 0.55, 1e-12);
  EXPECT_NEAR(learning_rate(opt, sched, 110, 110), 0.1, 1e-12);
}

}  // namespace
}  // namespace dshost
