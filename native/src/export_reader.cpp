#include "export_reader.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "json_mini.h"
#include "ramac_sampler.h"

namespace ramac {

const char* const TENSOR_NAMES[10] = {"w_x", "w_s", "c_time", "w2", "b2", "w3", "b3", "w_out", "b_out", "coefs"};

namespace {

constexpr int FORMAT_VERSION = 1;

[[noreturn]] void fail(int code, const std::string& message) { throw LoadError{code, message}; }

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(RAMAC_ERR_IO, "cannot read " + path + " (" + std::strerror(errno) + ")");
  std::ostringstream buf;
  buf << f.rdbuf();
  if (f.bad()) fail(RAMAC_ERR_IO, "cannot read " + path);
  return buf.str();
}

const Json& member(const Json& obj, const char* key, Json::Type type, const std::string& where) {
  const Json* v = obj.find(key);
  if (!v || v->type != type) fail(RAMAC_ERR_FORMAT, where + " lacks \"" + key + "\" of the right type");
  return *v;
}

int positive_int(const Json& obj, const char* key, const std::string& where) {
  double v = member(obj, key, Json::Number, where).number;
  if (!(v >= 1 && v <= 1 << 30) || v != std::floor(v))
    fail(RAMAC_ERR_FORMAT, where + ": \"" + key + "\" must be a positive integer");
  return static_cast<int>(v);
}

std::vector<float> floats(const Json& obj, const char* key, size_t n, const std::string& where) {
  const Json& arr = member(obj, key, Json::Array, where);
  if (arr.items.size() != n)
    fail(RAMAC_ERR_FORMAT, where + ": \"" + key + "\" holds " + std::to_string(arr.items.size()) +
                               " numbers, expected " + std::to_string(n));
  std::vector<float> out;
  for (const Json& x : arr.items) {
    if (x.type != Json::Number || !std::isfinite(x.number))
      fail(RAMAC_ERR_FORMAT, where + ": \"" + key + "\" holds a non-number or a non-finite value");
    out.push_back(static_cast<float>(x.number));
  }
  return out;
}

std::string shape_text(const std::vector<long>& s) {
  std::string t = "(";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + (s.size() == 1 ? ",)" : ")");
}

}  // namespace

HostExport read_export(const std::string& dir, int hidden, int state_pad, int action_pad) {
  const std::string hpath = dir + "/header.json", wpath = dir + "/weights.bin";
  const std::string text = read_file(hpath);
  Json h;
  try {
    h = JsonParser(text).parse();
  } catch (const std::exception& e) {
    fail(RAMAC_ERR_FORMAT, hpath + " is not valid JSON (" + e.what() + ")");
  }
  if (h.type != Json::Object) fail(RAMAC_ERR_FORMAT, hpath + " is not a JSON object");
  const Json* fmt = h.find("format");
  if (!fmt || fmt->type != Json::String || fmt->str != "ramac-actor")
    fail(RAMAC_ERR_FORMAT, hpath + " is not a ramac export (its \"format\" is not \"ramac-actor\")");
  const Json& version = member(h, "format_version", Json::Number, hpath);
  if (version.number != FORMAT_VERSION)
    fail(RAMAC_ERR_FORMAT, hpath + " has format version " + std::to_string(static_cast<int>(version.number)) +
                               "; this library reads version " + std::to_string(FORMAT_VERSION));
  const std::string& kind = member(h, "kind", Json::String, hpath).str;
  if (kind != "diffusion-chain")
    fail(RAMAC_ERR_FORMAT, hpath + " holds a \"" + kind + "\" actor; this library samples \"diffusion-chain\" ones");

  HostExport e;
  e.agent = member(h, "agent", Json::String, hpath).str;
  e.state_dim = positive_int(h, "state_dim", hpath);
  e.action_dim = positive_int(h, "action_dim", hpath);
  e.hidden = positive_int(h, "hidden", hpath);
  e.n_steps = positive_int(h, "n_steps", hpath);
  e.state_pad = positive_int(h, "state_pad", hpath);
  e.action_pad = positive_int(h, "action_pad", hpath);
  double max_action = member(h, "max_action", Json::Number, hpath).number;
  if (!(max_action > 0 && std::isfinite(max_action))) fail(RAMAC_ERR_FORMAT, hpath + ": max_action must be > 0");
  e.max_action = static_cast<float>(max_action);
  if (e.state_dim > e.state_pad || e.action_dim > e.action_pad)
    fail(RAMAC_ERR_FORMAT, hpath + ": state_dim/action_dim exceed their pads");
  if (e.hidden != hidden || e.state_pad != state_pad || e.action_pad != action_pad)
    fail(RAMAC_ERR_SHAPE, "the export " + dir + " has hidden " + std::to_string(e.hidden) + ", state pad " +
                              std::to_string(e.state_pad) + ", action pad " + std::to_string(e.action_pad) +
                              " but this library was built for " + std::to_string(hidden) + ", " +
                              std::to_string(state_pad) + ", " + std::to_string(action_pad) +
                              "; rebuild with cmake -DRAMAC_HIDDEN=" + std::to_string(e.hidden) +
                              " -DRAMAC_STATE_PAD=" + std::to_string(e.state_pad) +
                              " -DRAMAC_ACTION_PAD=" + std::to_string(e.action_pad));
  e.obs_mean = floats(h, "obs_mean", e.state_dim, hpath);
  e.obs_std = floats(h, "obs_std", e.state_dim, hpath);

  const long H = hidden, T = e.n_steps;
  const std::map<std::string, std::vector<long>> want = {
      {"w_x", {action_pad, H}}, {"w_s", {state_pad, H}}, {"c_time", {T, H}}, {"w2", {H, H}}, {"b2", {H}},
      {"w3", {H, H}}, {"b3", {H}}, {"w_out", {H, action_pad}}, {"b_out", {action_pad}}, {"coefs", {T, 8}}};
  const std::string blob = read_file(wpath);
  for (const Json& t : member(h, "tensors", Json::Array, hpath).items) {
    const std::string where = hpath + " tensor entry";
    if (t.type != Json::Object) fail(RAMAC_ERR_FORMAT, where + " is not an object");
    const std::string& name = member(t, "name", Json::String, where).str;
    auto it = want.find(name);
    if (it == want.end()) continue;  // tensors of later format additions are skipped
    const std::string tw = hpath + " tensor " + name;
    if (member(t, "dtype", Json::String, tw).str != "float32") fail(RAMAC_ERR_FORMAT, tw + ": dtype is not float32");
    std::vector<long> shape;
    for (const Json& d : member(t, "shape", Json::Array, tw).items) shape.push_back(static_cast<long>(d.number));
    if (shape != it->second)
      fail(RAMAC_ERR_FORMAT, tw + " has shape " + shape_text(shape) + ", expected " + shape_text(it->second));
    size_t n = 1;
    for (long d : shape) n *= static_cast<size_t>(d);
    double offset = member(t, "offset", Json::Number, tw).number;
    double nbytes = member(t, "nbytes", Json::Number, tw).number;
    if (nbytes != 4.0 * n || offset < 0 || std::fmod(offset, 4.0) != 0 || offset + nbytes > blob.size())
      fail(RAMAC_ERR_FORMAT, tw + " lies outside " + wpath + " (" + std::to_string(blob.size()) +
                                 " bytes) or has the wrong size: the file is truncated or from another export");
    std::vector<float> values(n);
    std::memcpy(values.data(), blob.data() + static_cast<size_t>(offset), 4 * n);  // little-endian hosts
    for (float v : values)
      if (!std::isfinite(v)) fail(RAMAC_ERR_FORMAT, tw + " holds NaN or inf");
    e.tensors[name] = std::move(values);
  }
  for (const char* name : TENSOR_NAMES)
    if (!e.tensors.count(name)) fail(RAMAC_ERR_FORMAT, hpath + " lists no tensor \"" + name + "\"");
  return e;
}

}  // namespace ramac
