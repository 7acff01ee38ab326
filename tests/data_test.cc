// The bundled dataset plugins (Fashion-MNIST from Debian's package, CIFAR-10's binary
// format, image folders, WebDataset shards) as a rank opens them, the image code they share,
// the input pipeline, and the distributed sampler.
#include "core/config.h"
#include "core/dataset.h"
#include "core/error.h"
#include "core/input_pipeline.h"
#include "core/resample_decoded.h"
#include "core/sampler.h"
#include "plugins/datasets/common/image_decode.h"
#include "plugins/datasets/common/image_folder.h"
#include "plugins/datasets/common/tar_shards.h"
#include "tests/test_labels.h"
#include "tests/test_util.h"

#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

namespace dshost {
namespace {

using test::open_dataset;

std::string path_set(const std::string& path) { return "data.path=\"" + path + "\""; }

std::unique_ptr<DatasetPlugin> fashion_mnist() {
  return open_dataset("fashion_mnist", {path_set(test::fashion_mnist_dir())});
}

// Samples `indices` of `split` as the dataset fills them: uint8 images [n, C, H, W] and
// their labels [n].
struct Samples {
  at::Tensor images, labels;
};
Samples samples_of(const DatasetPlugin& d, dshost_split split, const std::vector<int64_t>& indices,
                   uint64_t augment_seed = 0) {
  const auto n = static_cast<int64_t>(indices.size());
  std::vector<int64_t> shape = d.input_shape();
  shape.insert(shape.begin(), n);
  Samples out{at::empty(shape, at::kByte), at::empty({n}, at::kLong)};
  for (int64_t i = 0; i < n; ++i)
    d.fill(split, indices[i], augment_seed, out.images[i].data_ptr(),
           out.labels.data_ptr<int64_t>() + i);
  return out;
}
Samples first_samples(const DatasetPlugin& d, dshost_split split, int64_t n) {
  std::vector<int64_t> indices(n);
  for (int64_t i = 0; i < n; ++i) indices[i] = i;
  return samples_of(d, split, indices);
}

// What `open` throws, or "(accepted)".
std::string refusal(const std::function<void()>& open) {
  try {
    open();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(FashionMnist, ReadsBothSplitsWithBalancedClasses) {
  const auto d = fashion_mnist();
  EXPECT_EQ(d->size(DSHOST_TRAIN_SPLIT), 60000);
  EXPECT_EQ(d->size(DSHOST_TEST_SPLIT), 10000);
  EXPECT_EQ(d->input_shape(), (std::vector<int64_t>{1, 28, 28}));
  const Samples train = first_samples(*d, DSHOST_TRAIN_SPLIT, 60000);
  // Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
  EXPECT_TRUE(at::bincount(train.labels).eq(6000).all().item<bool>());
  EXPECT_TRUE(
      at::bincount(first_samples(*d, DSHOST_TEST_SPLIT, 10000).labels).eq(1000).all().item<bool>());
  // Pixel statistics match the normalisation constants used for training.
  const double mean = train.images.to(at::kDouble).mean().item<double>() / 255.0;
  EXPECT_NEAR(mean, d->info().mean[0], 1e-3);
}

TEST(FashionMnist, TruncatedFileIsRefusedNamingIt) {
  const std::string dir = test::scratch_dir("fmnist_truncated");
  for (const char* name :
       {"train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
    std::filesystem::copy_file(test::fashion_mnist_dir() + "/" + name, dir + "/" + name);
  gzFile out = gzopen((dir + "/train-images-idx3-ubyte.gz").c_str(), "wb");
  const unsigned char header[16] = {0, 0, 8, 3, 0, 0, 0xea, 0x60, 0, 0, 0, 28, 0, 0, 0, 28};
  gzwrite(out, header, sizeof(header));
  gzwrite(out, std::string(1000, '\0').data(), 1000);  // 60000 images promised, 1000 bytes given
  gzclose(out);
  const std::string message = refusal([&] { open_dataset("fashion_mnist", {path_set(dir)}); });
  EXPECT_NE(
      message.find("dataset 'fashion_mnist' (" DSHOST_BUILD_PLUGIN_DIR
                   "/dshost_dataset_fashion_mnist.so): " +
                   dir +
                   "/train-images-idx3-ubyte.gz: not a valid IDX file (holds 1000 data bytes, its "
                   "header promises [60000, 28, 28] = 47040000)"),
      std::string::npos)
      << message;
}

// CIFAR-10 binary batches made from real images: Fashion-MNIST's, padded to 32 x 32 and
// given three planes (R = G = B), `per_file` records in each of the six files.
std::string write_cifar_folder(const std::string& name, int64_t per_file) {
  const std::string dir = test::scratch_dir(name);
  const auto fashion = fashion_mnist();
  const Samples train = first_samples(*fashion, DSHOST_TRAIN_SPLIT, 5 * per_file);
  const Samples test = first_samples(*fashion, DSHOST_TEST_SPLIT, per_file);
  const char* files[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                         "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
  for (int f = 0; f < 6; ++f) {
    const Samples& from = f < 5 ? train : test;
    const int64_t first = f < 5 ? f * per_file : 0;
    const at::Tensor images =
        at::constant_pad_nd(from.images.narrow(0, first, per_file), {2, 2, 2, 2})
            .expand({per_file, 3, 32, 32});
    const at::Tensor records =
        at::cat({from.labels.narrow(0, first, per_file).to(at::kByte).unsqueeze(1),
                 images.reshape({per_file, 3072})},
                1)
            .contiguous();
    test::write_file(dir + "/" + files[f], std::string(static_cast<const char*>(records.data_ptr()),
                                                       static_cast<size_t>(records.numel())));
  }
  return dir;
}

TEST(Cifar10, ReadsRecordsAsLabelsAndThreePlanes) {
  const std::string dir = write_cifar_folder("cifar_read", 100);
  const auto d = open_dataset("cifar10", {path_set(dir)});
  EXPECT_EQ(d->size(DSHOST_TRAIN_SPLIT), 500);
  EXPECT_EQ(d->size(DSHOST_TEST_SPLIT), 100);
  EXPECT_EQ(d->input_shape(), (std::vector<int64_t>{3, 32, 32}));
  const Samples cifar = first_samples(*d, DSHOST_TRAIN_SPLIT, 500);
  const Samples fashion = first_samples(*fashion_mnist(), DSHOST_TRAIN_SPLIT, 500);
  EXPECT_TRUE(cifar.labels.equal(fashion.labels));
  EXPECT_TRUE(cifar.images[137][2].narrow(0, 2, 28).narrow(1, 2, 28).equal(fashion.images[137][0]));
}

TEST(Cifar10, APartialRecordOrAnUnknownLabelIsRefusedNamingTheFile) {
  const std::string dir = write_cifar_folder("cifar_bad", 10);
  const std::string batch = dir + "/data_batch_3.bin";
  std::filesystem::resize_file(batch, 3073 * 10 - 5);
  std::string message = refusal([&] { open_dataset("cifar10", {path_set(dir)}); });
  EXPECT_NE(
      message.find(batch +
                   ": not a CIFAR-10 binary batch (30725 bytes, not a whole number of 3073-byte "
                   "records)"),
      std::string::npos)
      << message;
  write_cifar_folder("cifar_bad", 10);  // whole again
  std::string bytes = test::read_file(dir + "/test_batch.bin");
  bytes[3073 * 4] = 12;  // record 4's label
  test::write_file(dir + "/test_batch.bin", bytes);
  message = refusal([&] { open_dataset("cifar10", {path_set(dir)}); });
  EXPECT_NE(message.find(dir + "/test_batch.bin: record 4 has label 12; CIFAR-10 labels are 0-9"),
            std::string::npos)
      << message;
}

DSHOST_SUITE_LABEL(Cifar10Training, slow);
// `dshost run` on a CIFAR-10 folder: the basic CNN at 3 x 32 x 32 learns the images (made
// from Fashion-MNIST, so its accuracy is comparable: well above chance in 150 steps).
TEST(Cifar10Training, TheBasicCnnLearnsFromACifarFolder) {
  const std::string data = write_cifar_folder("cifar_training_data", 1000);
  std::string summary;
  const auto losses = test::train_quickstart(
      "cifar10",
      {"data.dataset=\"cifar10\"", "data.path=\"" + data + "\"", "model.in_channels=3",
       "model.image_size=32", "train.max_steps=150", "train.log_every=50"},
      &summary);
  ASSERT_EQ(losses.size(), 150u);
  EXPECT_GT(nlohmann::json::parse(summary)["test_accuracy"].get<double>(), 0.6) << summary;
}

// An image folder of real images in JPEG and PNG (tests/make_image_folder.py).
std::string make_image_folder(const std::string& name, int train_per_class, int val_per_class) {
  const std::string dir = test::scratch_dir(name);
  const test::Ran made =
      test::run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/make_image_folder.py", dir,
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
  EXPECT_EQ(train.classes,
            (std::vector<std::string>{"bag", "boot", "coat", "dress", "pullover", "sandal", "shirt",
                                      "sneaker", "trouser", "tshirt"}));
  EXPECT_EQ(train.paths.size(), 31u);
  EXPECT_NE(std::find(train.paths.begin(), train.paths.end(), dir + "/train/tshirt/broken.jpg"),
            train.paths.end());
  for (const auto& p : train.paths) EXPECT_EQ(p.find("notes.txt"), std::string::npos);
  EXPECT_EQ(open_dataset("image_folder", {path_set(dir)})->size(DSHOST_TEST_SPLIT), 20);
  const RgbImage png = EncodedImage(dir + "/train/bag/00001.png").decode();
  EXPECT_EQ(png.height, 36);
  EXPECT_EQ(png.width, 40);
  const at::Tensor pixels =
      at::from_blob(const_cast<uint8_t*>(png.pixels.data()), {36, 40, 3}, at::kByte);
  EXPECT_TRUE(pixels.select(2, 0).equal(pixels.select(2, 2)));
  EXPECT_GT(pixels.max().item<int64_t>(), 100);
  try {
    EncodedImage(dir + "/train/tshirt/broken.jpg").decode();
    ADD_FAILURE() << "broken.jpg decoded";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), DSHOST_BAD_SAMPLE);
    EXPECT_NE(
        std::string(e.what()).find(dir + "/train/tshirt/broken.jpg: not a JPEG or PNG image that "
                                         "can be decoded ("),
        std::string::npos)
        << e.what();
  }
}

// More files that do not decode than data.max_bad_files stop the run, naming the count and
// the last file.
TEST(ImageFolder, MoreUndecodableFilesThanAllowedStopTheRun) {
  const std::string dir = make_image_folder("image_folder_bad_files", 2, 1);
  test::write_file(dir + "/train/bag/broken.png", "not a PNG either");
  const auto data =
      open_dataset("image_folder", {path_set(dir), "data.max_bad_files=1"}, {3, 32, 32});
  const auto files = scan_image_folder(dir + "/train").paths;
  const auto index = [&](const std::string& name) {
    return static_cast<int64_t>(std::find(files.begin(), files.end(), dir + "/train/" + name) -
                                files.begin());
  };
  samples_of(*data, DSHOST_TRAIN_SPLIT, {index("tshirt/broken.jpg")}, 7);
  EXPECT_EQ(data->skipped(), 1);
  try {
    samples_of(*data, DSHOST_TRAIN_SPLIT, {index("bag/broken.png")}, 7);
    ADD_FAILURE() << "a second undecodable file passed a limit of 1";
  } catch (const UserError& e) {
    EXPECT_EQ(e.exit_code(), 2);
    const std::string message = e.what();
    EXPECT_EQ(message.rfind("2 samples could not be made (the last: " + dir +
                                "/train/bag/broken.png: not a JPEG or "
                                "PNG image that can be decoded (",
                            0),
              0u)
        << message;
    EXPECT_NE(message.find("), more than data.max_bad_files = 1; remove or replace them, or raise "
                           "data.max_bad_files"),
              std::string::npos)
        << message;
  }
}

// A file whose header reads but whose data does not decode (a PNG cut short after the scan)
// is skipped while training: its row holds the next sample's image and label instead.
TEST(ImageFolder, AFileThatNoLongerDecodesGivesItsRowToTheNextSample) {
  const std::string dir = make_image_folder("image_folder_truncated", 3, 1);
  const auto data = open_dataset("image_folder", {path_set(dir)}, {3, 32, 32});
  const ImageFiles train = scan_image_folder(dir + "/train");
  const auto& files = train.paths;
  const int64_t cut =
      std::find(files.begin(), files.end(), dir + "/train/coat/00003.png") - files.begin();
  ASSERT_LT(cut + 1, static_cast<int64_t>(files.size()));
  std::filesystem::resize_file(files[cut], std::filesystem::file_size(files[cut]) / 2);
  const Samples with_cut = samples_of(*data, DSHOST_TRAIN_SPLIT, {0, cut}, 7);
  const Samples next = samples_of(*data, DSHOST_TRAIN_SPLIT, {0, cut + 1}, 7);
  EXPECT_NE(train.labels[cut], train.labels[cut + 1]);
  EXPECT_EQ(with_cut.labels[1].item<int64_t>(), train.labels[cut + 1]);
  EXPECT_TRUE(with_cut.images[1].equal(next.images[1]));
  EXPECT_TRUE(with_cut.images[0].equal(next.images[0]));
}

// A JPEG cut short and an empty file are skipped and counted, each named once.
TEST(ImageFolder, ATruncatedJpegAndAnEmptyFileAreSkippedAndCounted) {
  const std::string dir = make_image_folder("image_folder_cut_jpeg", 2, 1);
  const auto data = open_dataset("image_folder", {path_set(dir)}, {3, 32, 32});
  const auto files = scan_image_folder(dir + "/train").paths;
  const auto index = [&](const std::string& name) {
    return static_cast<int64_t>(std::find(files.begin(), files.end(), dir + "/train/" + name) -
                                files.begin());
  };
  const std::string jpeg = dir + "/train/coat/00002.jpg";
  std::filesystem::resize_file(jpeg, std::filesystem::file_size(jpeg) * 2 / 3);
  std::filesystem::resize_file(dir + "/train/bag/00002.jpg", 0);
  std::vector<uint8_t> pixels(3 * 32 * 32);
  int64_t label = -1;
  for (const char* name : {"coat/00002.jpg", "bag/00002.jpg", "coat/00002.jpg"})
    EXPECT_EQ(data->fill(DSHOST_TRAIN_SPLIT, index(name), 7, pixels.data(), &label),
              index(name) + 1)
        << name;
  EXPECT_EQ(data->skipped(), 2);
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
)",
                                    dir, long_key});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const ShardIndex index = index_shards(expand_shards(dir + "/good-{000000..000001}.tar"));
  ASSERT_EQ(index.samples.size(), 3u);
  EXPECT_EQ(index.samples[0].member, long_key + ".jpg");
  EXPECT_EQ(index.samples[0].label, 7);
  EXPECT_EQ(read_bytes(index.shards[0], index.samples[0].offset, index.samples[0].size),
            "\xff\xd8\xff not really");
  EXPECT_EQ(index.samples[1].label, 3);
  EXPECT_EQ(index.samples[2].shard, 1);
  EXPECT_EQ(index.samples[2].member, "c.JPEG");
  EXPECT_EQ(refusal([&] { expand_shards(dir + "/good-{000000..000002}.tar"); }),
            "shard " + dir + "/good-000002.tar of '" + dir +
                "/good-{000000..000002}.tar' does not exist; every shard of the range must");
  // Through the plugin, at the manifest's data.path.
  const std::string bad_range = "data.path=\"" + dir + "/good-{000000.000001}.tar\"";
  const test::Ran r = test::dshost({"check", test::quickstart_manifest(), "--set",
                                    "data.dataset=\"webdataset\"", "--set", bad_range});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--set " + bad_range +
                       ": error: dataset 'webdataset' (" DSHOST_BUILD_PLUGIN_DIR
                       "/dshost_dataset_webdataset.so): '" +
                       dir +
                       "/good-{000000.000001}.tar' has no brace range "
                       "of shard numbers, as in train-{000000..000127}.tar"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(
      refusal([&] { index_shards({dir + "/text-000000.tar"}); }),
      dir + "/text-000000.tar is not a tar file (a shard must be one; dshost pack writes them)");
  EXPECT_EQ(
      refusal([&] { index_shards({dir + "/unlabelled-000000.tar"}); }),
      dir +
          "/unlabelled-000000.tar: sample 'a' has no .cls label (a WebDataset sample is KEY.jpg or "
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
    } catch (const Error&) {
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
  const std::string message = refusal([&] { open_dataset("fashion_mnist", {path_set(dir)}); });
  EXPECT_NE(
      message.find(
          dir + "/train-images-idx3-ubyte.gz: not a valid IDX file (holds 4 data bytes, its header "
                "promises [4294967295, 4294967295, 4294967295] = "),
      std::string::npos)
      << message;
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
  const test::Ran fixtures =
      test::run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/crop_boxes.py"});
  ASSERT_EQ(fixtures.exit_code, 0) << fixtures.err;
  const auto cases = nlohmann::json::parse(fixtures.out);
  int fallbacks = 0;
  for (const auto& c : cases) {
    RecordedDraws draws(c);
    const CropBox b = random_resized_crop_box(c["height"], c["width"], draws);
    EXPECT_EQ((std::vector<int64_t>{b.top, b.left, b.height, b.width}),
              c["box"].get<std::vector<int64_t>>())
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
    resample_image(image, sample_box(image, seed != 0, seed, 32), 32, out.data_ptr<uint8_t>());
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
// case for it (measured: 4.5 and 80). The host's resampling of a whole decoded image (where
// the GPU decodes the file) is torchvision's to one level (measured: 0.14 on average).
TEST(ImageFolder, DecodesAndCropsAsTorchvisionDoes) {
  const std::string dir = test::scratch_dir("image_transforms");
  const test::Ran fixtures =
      test::run({"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/image_transforms.py", dir, "224"});
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
                                          {image.height(), image.width(), 3}, at::kByte)
                                .to(at::kInt);
    EXPECT_LE((ours - raw(c["rgb"], {image.height(), image.width(), 3})).abs().max().item<int>(), 1)
        << file;
    const auto compare = [&](const at::Tensor& got, const std::string& expected, bool full_size,
                             const std::string& what) {
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
    // The host's resampling of the whole decoded image, as where the GPU decodes the file.
    const auto compare_host = [&](const ImageBox& box, const std::string& expected,
                                  const std::string& what) {
      const at::Tensor out = at::empty({3, 224, 224}, at::kByte);
      resample_decoded(ours.to(at::kByte), box, out);
      const at::Tensor difference = (out.to(at::kInt) - raw(expected, {3, 224, 224})).abs();
      EXPECT_LE(difference.to(at::kDouble).mean().item<double>(), 0.25) << what;
      EXPECT_LE(difference.max().item<int>(), 1) << what;
    };
    for (const auto& crop : c["crops"]) {
      const auto b = crop["box"].get<std::vector<int64_t>>();
      at::Tensor out = at::empty({3, 224, 224}, at::kByte);
      const ImageBox box{double(b[0]), double(b[1]), double(b[2]),
                         double(b[3]), crop["flip"], true};
      resample_image(image, box, 224, out.data_ptr<uint8_t>());
      const bool full_size = file.find("png") != std::string::npos || b[2] < 224 || b[3] < 224;
      compare(out, crop["pixels"], full_size, file + " crop " + crop.dump());
      compare_host(box, crop["pixels"], file + " crop on the host " + crop.dump());
    }
    at::Tensor out = at::empty({3, 224, 224}, at::kByte);
    resample_image(image, sample_box(image, false, 0, 224), 224, out.data_ptr<uint8_t>());
    compare(out, c["eval"], file.find("png") != std::string::npos, file + " evaluation");
    compare_host(sample_box(image, false, 0, 224), c["eval"], file + " evaluation on the host");
  }

  EXPECT_GT(scaled, 10);
  EXPECT_GT(whole, 10);
}

// Where the host decodes JPEG itself, the image folder gives whole RGB and grey JPEGs as
// their files with the box to resample (which, decoded and resampled by the host, is the
// picture the dataset would have written: within the DCT scaling's 5 levels on average);
// CMYK JPEGs and PNG content it writes as pixels, and a JPEG cut short is skipped as before.
TEST(ImageFolder, GivesWholeJpegFilesToAHostThatDecodesThem) {
  const std::string dir = test::scratch_dir("image_folder_encoded");
  const std::string pictures = dir + "/train/pictures";
  std::filesystem::create_directories(pictures);
  std::filesystem::create_directories(dir + "/val/pictures");
  const test::Ran fixtures = test::run(
      {"/usr/bin/python3", DSHOST_SOURCE_DIR "/tests/image_transforms.py", pictures, "224"});
  ASSERT_EQ(fixtures.exit_code, 0) << fixtures.err;
  const std::string rgb = test::read_file(pictures + "/rgb.jpg");
  test::write_file(pictures + "/cut.jpg", rgb.substr(0, rgb.size() * 2 / 3));
  std::filesystem::copy_file(pictures + "/rgb.jpg", dir + "/val/pictures/rgb.jpg");
  const auto data = open_dataset("image_folder", {path_set(dir)}, {3, 224, 224});
  const std::vector<std::string> files = scan_image_folder(dir + "/train").paths;
  ASSERT_EQ(files.size(), 5u);  // cmyk, cut, grey, png_inside, rgb
  const auto sample = [&](dshost_split split, int64_t index, uint64_t seed,
                          EncodedSample* encoded) {
    at::Tensor pixels = at::zeros({3, 224, 224}, at::kByte);
    int64_t label = -1;
    EXPECT_EQ(data->fill(split, index, seed, pixels.data_ptr(), &label, encoded), index);
    return pixels;
  };
  const auto given_as_file = [&](dshost_split split, int64_t index, uint64_t seed,
                                 const std::string& path) {
    EncodedSample encoded;
    sample(split, index, seed, &encoded);
    EXPECT_EQ(std::string(encoded.bytes.begin(), encoded.bytes.end()), test::read_file(path))
        << path;
    EXPECT_EQ(encoded.box.box_only, split == DSHOST_TRAIN_SPLIT) << path;
    const RgbImage decoded = EncodedImage(path).decode();
    const at::Tensor out = at::empty({3, 224, 224}, at::kByte);
    resample_decoded(at::from_blob(const_cast<uint8_t*>(decoded.pixels.data()),
                                   {decoded.height, decoded.width, 3}, at::kByte),
                     encoded.box, out);
    const at::Tensor written = sample(split, index, seed, nullptr);
    EXPECT_LE((out.to(at::kInt) - written.to(at::kInt)).abs().to(at::kDouble).mean().item<double>(),
              5.0)
        << path;
  };
  for (uint64_t seed : {3, 4, 5, 6}) {
    given_as_file(DSHOST_TRAIN_SPLIT, 2, seed, files[2]);
    given_as_file(DSHOST_TRAIN_SPLIT, 4, seed, files[4]);
  }
  given_as_file(DSHOST_TEST_SPLIT, 0, 0, dir + "/val/pictures/rgb.jpg");
  for (int64_t written_as_pixels : {0, 3}) {
    EncodedSample encoded;
    const at::Tensor pixels = sample(DSHOST_TRAIN_SPLIT, written_as_pixels, 7, &encoded);
    EXPECT_TRUE(encoded.bytes.empty()) << files[written_as_pixels];
    EXPECT_TRUE(pixels.equal(sample(DSHOST_TRAIN_SPLIT, written_as_pixels, 7, nullptr)))
        << files[written_as_pixels];
  }
  EncodedSample encoded;
  std::vector<uint8_t> pixels(3 * 224 * 224);
  int64_t label = -1;
  EXPECT_EQ(data->fill(DSHOST_TRAIN_SPLIT, 1, 7, pixels.data(), &label, &encoded), 2);
  EXPECT_EQ(data->skipped(), 1);
}

DSHOST_SUITE_LABEL(ImageFolderTraining, slow);
// `dshost run` on an image folder: the broken file is named in a warning and the basic CNN
// learns the images (chance is 0.1).
TEST(ImageFolderTraining, TheBasicCnnLearnsFromJpegAndPngFolders) {
  const std::string data = make_image_folder("image_folder_training_data", 60, 20);
  const std::string dir = test::scratch_dir("training_image_folder");
  const test::Ran r = test::dshost({"run",   test::quickstart_manifest(),
                                    "--set", "run.output_dir=\"" + dir + "\"",
                                    "--set", "data.dataset=\"image_folder\"",
                                    "--set", "data.path=\"" + data + "\"",
                                    "--set", "data.image_size=32",
                                    "--set", "model.in_channels=3",
                                    "--set", "model.image_size=32",
                                    "--set", "train.epochs=12",
                                    "--set", "train.micro_batch_size=16",
                                    "--set", "scheduler.warmup_steps=10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("skipping " + data +
                       "/train/tshirt/broken.jpg: not a JPEG or PNG image that "
                       "can be decoded ("),
            std::string::npos)
      << r.err;
  const auto summary = nlohmann::json::parse(test::read_file(dir + "/quickstart/summary.json"));
  EXPECT_GE(summary["skipped_files"].get<int64_t>(), 1) << summary.dump();
  EXPECT_GT(summary["test_accuracy"].get<double>(), 0.5) << r.err;
}

// A batch as the pipeline must give it: the dataset's samples filled one by one, presented.
std::pair<at::Tensor, at::Tensor> expected_batch(const DatasetPlugin& d, dshost_split split,
                                                 const std::vector<int64_t>& order, int64_t first,
                                                 int64_t n, uint64_t augment_seed, int64_t rows) {
  const Samples s =
      samples_of(d, split, std::vector<int64_t>(order.begin() + first, order.begin() + first + n),
                 augment_seed);
  at::Tensor inputs = at::zeros({rows, 3, 32, 32}), targets = at::zeros({rows}, at::kLong);
  present_images(s.images, d.info().mean, d.info().std, inputs);
  targets.narrow(0, 0, n).copy_(s.labels);
  return {inputs, targets};
}

// Images presented by whole-batch passes, as a GPU's are (the channels' mean and std as
// tensors), are the CPU's table lookups to the last bit: the same steps in float.
TEST(InputPipeline, WholeBatchPassesGiveTheTablesValues) {
  const at::Tensor pixels = at::randint(0, 256, {4, 3, 5, 7}, at::kByte);
  const double mean[] = {0.485, 0.456, 0.406}, std[] = {0.229, 0.224, 0.225};
  at::Tensor by_table = at::zeros({6, 3, 5, 7}), by_passes = at::zeros({6, 3, 5, 7});
  present_images(pixels, mean, std, by_table);
  present_images(pixels, at::tensor({0.485f, 0.456f, 0.406f}), at::tensor({0.229f, 0.224f, 0.225f}),
                 by_passes);
  EXPECT_TRUE(by_passes.equal(by_table));
  EXPECT_GT(by_table.narrow(0, 0, 4).abs().min().item<float>(), 0.f) << "every row written";
  EXPECT_EQ(by_table.narrow(0, 4, 2).abs().max().item<float>(), 0.f) << "rows past the batch";
}

// The input pipeline's batches are the same to the last bit for 1, 2 and 4 workers, with
// and without prefetching, across epochs (a new order each), and equal to the dataset's
// samples filled one by one, for training and for evaluation (whose last batch is short).
TEST(InputPipeline, BatchesAreTheSameForAnyNumberOfWorkers) {
  const std::string dir = make_image_folder("input_pipeline_workers", 12, 1);
  const auto data = open_dataset("image_folder", {path_set(dir)}, {3, 32, 32});
  const int64_t rows = 8, size = data->size(DSHOST_TRAIN_SPLIT);
  const auto batches = [&](int workers, int prefetch) {
    InputPipeline pipeline(*data, rows, workers, prefetch, at::kCPU);
    std::vector<at::Tensor> out;
    for (int64_t epoch = 0; epoch < 2; ++epoch) {
      const auto order = std::make_shared<const std::vector<int64_t>>(
          shard_indices(size, 0, 1, 5, epoch, true, false));
      for (int64_t first = 0; first + rows <= static_cast<int64_t>(order->size()); first += rows) {
        at::Tensor inputs = at::zeros({rows, 3, 32, 32}), targets = at::zeros({rows}, at::kLong);
        pipeline.load(DSHOST_TRAIN_SPLIT, order, first, rows, 1000 + epoch, inputs, targets);
        out.push_back(at::cat({inputs.flatten(), targets.to(at::kFloat)}));
      }
    }
    return out;
  };
  const auto one = batches(1, 0);
  ASSERT_EQ(one.size(), 30u);  // 121 files (one broken): 15 batches an epoch
  for (const auto& [workers, prefetch] :
       std::vector<std::pair<int, int>>{{2, 4}, {4, 4}, {4, 0}, {1, 2}}) {
    const auto other = batches(workers, prefetch);
    ASSERT_EQ(other.size(), one.size());
    for (size_t i = 0; i < one.size(); ++i)
      EXPECT_TRUE(other[i].equal(one[i]))
          << workers << " workers, prefetch " << prefetch << ", batch " << i;
  }
  const auto [inputs, targets] =
      expected_batch(*data, DSHOST_TRAIN_SPLIT, shard_indices(size, 0, 1, 5, 0, true, false), rows,
                     rows, 1000, rows);
  EXPECT_TRUE(at::cat({inputs.flatten(), targets.to(at::kFloat)}).equal(one[1]));

  // Evaluation's batches of the test split (10 samples: 8, then 2), untransformed by draws.
  InputPipeline pipeline(*data, rows, 3, 2, at::kCPU);
  const auto test_order =
      std::make_shared<const std::vector<int64_t>>(shard_indices(10, 0, 1, 0, 0, false, false));
  for (const int64_t first : {0, 8}) {
    const int64_t n = std::min<int64_t>(rows, 10 - first);
    at::Tensor in = at::zeros({rows, 3, 32, 32}), out = at::zeros({rows}, at::kLong);
    pipeline.load(DSHOST_TEST_SPLIT, test_order, first, n, 0, in, out);
    const auto [expected_in, expected_out] =
        expected_batch(*data, DSHOST_TEST_SPLIT, *test_order, first, n, 0, rows);
    EXPECT_TRUE(in.equal(expected_in)) << first;
    EXPECT_TRUE(out.equal(expected_out)) << first;
  }
}

DSHOST_SUITE_LABEL(WebDatasetTraining, slow);
// `dshost pack` writes an image folder as shards (several, with its broken file), and
// training from them gives the folder's losses and test accuracy to the last bit.
TEST(WebDatasetTraining, PackedShardsTrainAsTheFolderDoes) {
  const std::string data = make_image_folder("webdataset_folder", 12, 3);
  const std::string shards = test::scratch_dir("webdataset_shards") + "/fmnist";
  const test::Ran packed = test::dshost({"pack", data, shards, "--samples-per-shard", "50"});
  ASSERT_EQ(packed.exit_code, 0) << packed.err;
  EXPECT_NE(packed.out.find("packed 121 training and 30 test samples of " + data +
                            " (10 classes); in the "
                            "manifest:\n  [data]\n  dataset = \"webdataset\"\n  path = \"" +
                            shards + "-train-{000000..000002}.tar\"\n  test_path = \"" + shards +
                            "-val-000000.tar\"\n"),
            std::string::npos)
      << packed.out;
  const std::vector<std::string> common{"data.image_size=32",       "model.in_channels=3",
                                        "model.image_size=32",      "train.epochs=2",
                                        "train.micro_batch_size=8", "train.grad_accum_steps=2",
                                        "train.log_every=1"};
  const auto train = [&](const std::string& name, std::vector<std::string> sets,
                         std::string* summary) {
    sets.insert(sets.end(), common.begin(), common.end());
    return test::train_quickstart(name, sets, summary);
  };
  std::string folder_summary, shard_summary;
  const auto folder =
      train("webdataset_from_folder",
            {"data.dataset=\"image_folder\"", "data.path=\"" + data + "\""}, &folder_summary);
  const auto shard = train(
      "webdataset_from_shards",
      {"data.dataset=\"webdataset\"", "data.path=\"" + shards + "-train-{000000..000002}.tar\"",
       "data.test_path=\"" + shards + "-val-000000.tar\""},
      &shard_summary);
  ASSERT_EQ(folder.size(), 6u);  // 3 steps an epoch: 61 samples a rank, 16 a step
  EXPECT_EQ(shard, folder);
  const auto accuracy = [](const std::string& s) {
    return nlohmann::json::parse(s)["test_accuracy"].get<double>();
  };
  EXPECT_EQ(accuracy(shard_summary), accuracy(folder_summary));
  const auto skipped = [](const std::string& s) {
    return nlohmann::json::parse(s)["skipped_files"].get<int64_t>();
  };
  EXPECT_GE(skipped(shard_summary), 1);
  EXPECT_EQ(skipped(shard_summary), skipped(folder_summary));
}

// Fashion-MNIST's batches of 64 in one epoch's order, on the GPU.
class DeviceBatches : public testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  }
  const at::Device cuda{at::kCUDA, 0};
  const std::unique_ptr<DatasetPlugin> data = fashion_mnist();
  const std::shared_ptr<const std::vector<int64_t>> order =
      std::make_shared<const std::vector<int64_t>>(
          shard_indices(data->size(DSHOST_TRAIN_SPLIT), 0, 1, 5, 0, true, true));
  const std::vector<int64_t> shape{64, 1, 28, 28};
};

DSHOST_SUITE_LABEL(DeviceBatches, gpu);
// Loading a batch on a GPU does not wait for the device: load() returns while earlier work
// still runs on the stream (its copies go from pinned memory, without blocking), and the
// batch is the one the CPU pipeline makes, to float rounding of the device's arithmetic.
TEST_F(DeviceBatches, LoadingABatchDoesNotWaitForTheDevice) {
  InputPipeline on_gpu(*data, 64, 2, 2, cuda);
  at::Tensor inputs = at::zeros(shape, cuda);
  at::Tensor targets = at::zeros({64}, at::TensorOptions(cuda).dtype(at::kLong));
  on_gpu.load(DSHOST_TRAIN_SPLIT, order, 0, 64, 9, inputs, targets);  // allocations made

  at::Tensor busy = at::randn({4096, 4096}, cuda);
  for (int i = 0; i < 50; ++i) busy = at::mm(busy, busy).div_(64);  // tens of ms on the stream
  c10::Event busy_done(at::kCUDA);
  busy_done.record(c10::impl::getDeviceGuardImpl(at::kCUDA)->getStream(cuda));
  on_gpu.load(DSHOST_TRAIN_SPLIT, order, 64, 64, 9, inputs, targets);
  EXPECT_FALSE(busy_done.query()) << "load() waited for the device";

  InputPipeline on_cpu(*data, 64, 2, 2, at::kCPU);
  at::Tensor host_inputs = at::zeros(shape), host_targets = at::zeros({64}, at::kLong);
  on_cpu.load(DSHOST_TRAIN_SPLIT, order, 64, 64, 9, host_inputs, host_targets);
  EXPECT_TRUE(targets.cpu().equal(host_targets));
  EXPECT_LT((inputs.cpu() - host_inputs).abs().max().item<float>(), 1e-5);
}

// The next batch's images go to the device on a stream of their own while the step runs:
// an epoch's first batches, each loaded with the step's stream kept busy after it (so that
// copies ahead wait on presentations still queued there, and presentations on copies), are
// the CPU pipeline's to float rounding, and batches went ahead of their load.
TEST_F(DeviceBatches, ImagesCopiedAheadOfTheirStepArriveWhole) {
  InputPipeline on_gpu(*data, 64, 2, 2, cuda), on_cpu(*data, 64, 2, 2, at::kCPU);
  at::Tensor inputs = at::zeros(shape, cuda), busy = at::randn({2048, 2048}, cuda);
  at::Tensor targets = at::zeros({64}, at::TensorOptions(cuda).dtype(at::kLong));
  std::vector<at::Tensor> got;
  for (int64_t first = 0; first < 8 * 64; first += 64) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the workers write the next
    on_gpu.load(DSHOST_TRAIN_SPLIT, order, first, 64, 9, inputs, targets);
    got.push_back(inputs.clone());
    for (int i = 0; i < 10; ++i) busy = at::mm(busy, busy).div_(2048);  // the step
  }
  EXPECT_GT(on_gpu.copied_ahead(), 0);
  for (size_t i = 0; i < got.size(); ++i) {
    at::Tensor host_inputs = at::zeros(shape), host_targets = at::zeros({64}, at::kLong);
    on_cpu.load(DSHOST_TRAIN_SPLIT, order, static_cast<int64_t>(i) * 64, 64, 9, host_inputs,
                host_targets);
    EXPECT_LT((got[i].cpu() - host_inputs).abs().max().item<float>(), 1e-5) << "batch " << i;
  }
}

// The inputs of `rows` samples of `split` in `order` from `pipeline` (uint8 images [3, 224, 224]
// presented in float on `device`), as pixel values again.
at::Tensor loaded_pixels(InputPipeline& pipeline, const DatasetPlugin& data, dshost_split split,
                         const std::shared_ptr<const std::vector<int64_t>>& order, int64_t first,
                         int64_t rows, uint64_t seed, at::Device device,
                         at::Tensor* targets = nullptr) {
  at::Tensor inputs = at::zeros({rows, 3, 224, 224}, device);
  at::Tensor labels = at::zeros({rows}, at::TensorOptions(device).dtype(at::kLong));
  pipeline.load(split, order, first, rows, seed, inputs, labels);
  if (targets != nullptr) *targets = labels.cpu();
  const dshost_dataset_info& info = data.info();
  const at::Tensor mean =
      at::tensor(std::vector<double>(info.mean, info.mean + 3)).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor(std::vector<double>(info.std, info.std + 3)).view({1, 3, 1, 1});
  return (inputs.cpu().to(at::kDouble) * std + mean) * 255;
}

DSHOST_SUITE_LABEL(GpuJpeg, gpu);
// JPEG files decoded on the GPU (data.decode = "gpu") give the pictures the CPU gives, for
// every kind of file: baseline RGB and grey JPEGs (the hardware decoder), progressive ones
// (the GPU's cores), CMYK JPEGs and PNG content (written by the dataset on the CPU), and a
// JPEG cut short (skipped on the CPU, as there). Each picture within the 5 levels on average
// that the CPU's DCT scaling makes (see DecodesAndCropsAsTorchvisionDoes), for training's
// crops and evaluation's; and loading a batch does not wait for the device.
TEST(GpuJpeg, DecodesTheCpusPicturesWithoutWaitingForTheDevice) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  ASSERT_TRUE(GpuJpegDecoder::built()) << "a CUDA build without nvJPEG";
  const at::Device cuda(at::kCUDA, 0);
  const std::string dir = test::scratch_dir("gpu_jpeg");
  const std::string pictures = dir + "/train/pictures";
  std::filesystem::create_directories(pictures);
  std::filesystem::create_directories(dir + "/val/pictures");
  const test::Ran fixtures =
      test::run({test::python(), DSHOST_SOURCE_DIR "/tests/image_transforms.py", pictures, "224"});
  ASSERT_EQ(fixtures.exit_code, 0) << fixtures.err;
  const test::Ran progressive =
      test::run({test::python(), "-c",
                 "import sys; from PIL import Image; "
                 "Image.open(sys.argv[1]).save(sys.argv[2], quality=90, progressive=True)",
                 pictures + "/rgb.jpg", pictures + "/progressive.jpg"});
  ASSERT_EQ(progressive.exit_code, 0) << progressive.err;
  const std::string rgb = test::read_file(pictures + "/rgb.jpg");
  test::write_file(pictures + "/cut.jpg", rgb.substr(0, rgb.size() * 2 / 3));
  for (const char* name : {"rgb.jpg", "grey.jpg"})
    std::filesystem::copy_file(pictures + "/" + name, dir + "/val/pictures/" + name);
  const auto data = open_dataset("image_folder", {path_set(dir)}, {3, 224, 224});
  ASSERT_EQ(data->size(DSHOST_TRAIN_SPLIT), 6);  // cmyk, cut, grey, png_inside, progressive, rgb
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < 36; ++i) indices.push_back(i % 6);
  const auto order = std::make_shared<const std::vector<int64_t>>(indices);
  const auto val_order = std::make_shared<const std::vector<int64_t>>(std::vector<int64_t>{0, 1});

  InputPipeline on_gpu(*data, 12, 2, 1, cuda, /*decode_on_gpu=*/true),
      on_cpu(*data, 12, 2, 1, cuda, false);
  const auto compare = [&](dshost_split split, const std::shared_ptr<const std::vector<int64_t>>& o,
                           int64_t rows) {
    at::Tensor gpu_targets, cpu_targets;
    const at::Tensor decoded = loaded_pixels(
        on_gpu, *data, split, o, 0, rows, split == DSHOST_TRAIN_SPLIT ? 7 : 0, cuda, &gpu_targets);
    const at::Tensor written = loaded_pixels(
        on_cpu, *data, split, o, 0, rows, split == DSHOST_TRAIN_SPLIT ? 7 : 0, cuda, &cpu_targets);
    EXPECT_TRUE(gpu_targets.equal(cpu_targets));
    const at::Tensor by_row = (decoded - written).abs().flatten(1).mean(1);
    EXPECT_LE(by_row.max().item<double>(), 5.0) << by_row;
    EXPECT_GT(written.std().item<double>(), 30.0);  // pictures, not blanks
  };
  compare(DSHOST_TRAIN_SPLIT, order, 12);
  compare(DSHOST_TEST_SPLIT, val_order, 2);
  EXPECT_EQ(data->skipped(), 1);  // cut.jpg

  at::Tensor busy = at::randn({4096, 4096}, cuda);
  for (int i = 0; i < 50; ++i) busy = at::mm(busy, busy).div_(64);  // tens of ms on the stream
  c10::Event busy_done(at::kCUDA);
  busy_done.record(c10::impl::getDeviceGuardImpl(at::kCUDA)->getStream(cuda));
  at::Tensor inputs = at::zeros({12, 3, 224, 224}, cuda);
  at::Tensor targets = at::zeros({12}, at::TensorOptions(cuda).dtype(at::kLong));
  on_gpu.load(DSHOST_TRAIN_SPLIT, order, 12, 12, 7, inputs, targets);
  EXPECT_FALSE(busy_done.query()) << "load() waited for the device";
}

TEST(Sampler, ShardsAreDisjointAndCoverEverySample) {
  const int64_t n = 1000;
  std::set<int64_t> seen;
  for (int rank = 0; rank < 4; ++rank)
    for (int64_t i : shard_indices(n, rank, 4, 7, 0, true, true))
      EXPECT_TRUE(seen.insert(i).second);
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

}  // namespace
}  // namespace dshost
