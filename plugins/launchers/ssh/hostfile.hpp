// DeepSpeed's hostfile and NODE_SPEC selections, for the ssh launcher.
//
//   # a comment
//   worker-1 slots=4
//   worker-2 slots=4        # slots: ranks (GPUs) on that host
//
// include / exclude select hosts and slots: "worker-1@worker-2:0,2" is all of worker-1 and
// slots 0 and 2 of worker-2. Errors name the file and line, or the selection.
#pragma once

#include <dshost/plugin.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace dshost::ssh {

struct Node {
  std::string host;
  std::vector<int> slots;  // slot indices in use: 0..slots-1 unless a selection narrowed them
};

inline std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

// A host name (letters, digits, '.', '-', '_', not starting with '-') or an IPv6
// address. Anything else could reach ssh as an option (-oProxyCommand=...) or a shell.
inline bool is_host_name(const std::string& host) {
  if (host.empty() || host.size() > 253 || host[0] == '-') return false;
  const bool ipv6 = host.find(':') != std::string::npos;
  return std::all_of(host.begin(), host.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
           (ipv6 && c == ':');
  });
}

inline Error hostfile_error(const std::string& where, const std::string& what) {
  return Error(where + ": " + what, DSHOST_INVALID_ARGUMENT);
}

inline std::vector<Node> parse_hostfile(const std::string& text, const std::string& path) {
  std::vector<Node> nodes;
  std::istringstream in(text);
  std::string raw;
  for (int line_no = 1; std::getline(in, raw); ++line_no) {
    const std::string line = trim(raw.substr(0, raw.find('#')));
    if (line.empty()) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    std::istringstream words(line);
    std::string host, slots_word, extra;
    words >> host >> slots_word >> extra;
    const std::string digits = slots_word.rfind("slots=", 0) == 0 ? slots_word.substr(6) : "";
    if (!extra.empty() || digits.empty() || digits.size() > 6 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return std::isdigit(c); }))
      throw hostfile_error(where, "'" + line + "' is not 'HOST slots=N'");
    if (!is_host_name(host))
      throw hostfile_error(where, "'" + host +
                                      "' is not a host name or address (letters, digits, "
                                      "'.', '-', '_'; not starting with '-')");
    const int slots = std::stoi(digits);
    if (slots < 1) throw hostfile_error(where, "host " + host + " has slots=0; remove the line");
    for (const auto& n : nodes)
      if (n.host == host) throw hostfile_error(where, "host " + host + " is listed twice");
    Node node{host, {}};
    for (int s = 0; s < slots; ++s) node.slots.push_back(s);
    nodes.push_back(node);
  }
  if (nodes.empty()) throw hostfile_error(path, "no hosts (expected lines of 'HOST slots=N')");
  return nodes;
}

inline std::vector<Node> read_hostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    throw Error("cannot read hostfile " + path +
                    " (launcher.hostfile); write one line per host: "
                    "'HOST slots=N'",
                DSHOST_INVALID_ARGUMENT);
  std::stringstream text;
  text << in.rdbuf();
  return parse_hostfile(text.str(), path);
}

// One term of a NODE_SPEC: a host, and the slots named after ':' (empty: all of them).
struct SpecTerm {
  std::string host;
  std::vector<int> slots;
};

inline std::vector<SpecTerm> parse_node_spec(const std::string& spec, const std::string& key) {
  std::vector<SpecTerm> terms;
  for (const std::string& item : dshost::split(spec, '@')) {
    const std::string where = "launcher." + key + " = \"" + spec + "\"";
    SpecTerm term{trim(item.substr(0, item.find(':'))), {}};
    if (term.host.empty())
      throw hostfile_error(where, "an empty host name (NODE_SPEC is 'host1@host2:0,2')");
    if (item.find(':') != std::string::npos) {
      for (std::string s : dshost::split(item.substr(item.find(':') + 1), ',')) {
        s = trim(s);
        if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), ::isdigit))
          throw hostfile_error(where, "slot '" + s + "' of host " + term.host + " is not a number");
        term.slots.push_back(std::stoi(s));
      }
    }
    terms.push_back(term);
  }
  return terms;
}

inline Node& find_node(std::vector<Node>& nodes, const SpecTerm& term, const std::string& key,
                       const std::string& hostfile) {
  for (auto& n : nodes)
    if (n.host == term.host) {
      for (int s : term.slots)
        if (std::find(n.slots.begin(), n.slots.end(), s) == n.slots.end())
          throw hostfile_error("launcher." + key,
                               "host " + n.host + " has no slot " + std::to_string(s) +
                                   " (it has slots=" + std::to_string(n.slots.size()) + ")");
      return n;
    }
  throw hostfile_error("launcher." + key,
                       "host " + term.host + " is not in the hostfile " + hostfile);
}

// The hosts and slots left after `include` or `exclude` (at most one of them may be set),
// in hostfile order, limited to the first `num_nodes` hosts when that is above 0.
inline std::vector<Node> select_nodes(std::vector<Node> nodes, const std::string& include,
                                      const std::string& exclude, int num_nodes,
                                      const std::string& hostfile) {
  if (!include.empty() && !exclude.empty())
    throw Error("launcher.include and launcher.exclude are mutually exclusive; set one",
                DSHOST_INVALID_ARGUMENT);
  if (!include.empty()) {
    std::vector<Node> chosen;
    for (const auto& term : parse_node_spec(include, "include")) {
      Node node = find_node(nodes, term, "include", hostfile);
      if (!term.slots.empty()) node.slots = term.slots;
      chosen.push_back(node);
    }
    std::vector<Node> ordered;  // hostfile order, whatever order include named them in
    for (const auto& n : nodes)
      for (const auto& c : chosen)
        if (c.host == n.host) ordered.push_back(c);
    nodes = ordered;
  }
  for (const auto& term : parse_node_spec(exclude, "exclude")) {
    Node& node = find_node(nodes, term, "exclude", hostfile);
    std::vector<int> kept;
    for (int s : node.slots)
      if (!term.slots.empty() &&
          std::find(term.slots.begin(), term.slots.end(), s) == term.slots.end())
        kept.push_back(s);
    node.slots = kept;
  }
  nodes.erase(
      std::remove_if(nodes.begin(), nodes.end(), [](const Node& n) { return n.slots.empty(); }),
      nodes.end());
  if (nodes.empty())
    throw Error("launcher.exclude leaves no host to run on", DSHOST_INVALID_ARGUMENT);
  if (num_nodes > static_cast<int>(nodes.size()))
    throw Error("launcher.num_nodes = " + std::to_string(num_nodes) + " but only " +
                    std::to_string(nodes.size()) + " hosts are selected from " + hostfile,
                DSHOST_INVALID_ARGUMENT);
  if (num_nodes > 0) nodes.resize(num_nodes);
  return nodes;
}

}  // namespace dshost::ssh
