// A manifest section declared once: each key's option (name, type, default, range, allowed
// values, help) together with the struct member it fills. The option table the validator
// checks and `dshost plugins` prints is made from the same declarations.
#pragma once

#include "core/manifest.h"

#include <dshost/plugin.hpp>  // split

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace dshost {

// The names of an enum's values in the order of its enumerators, '|'-separated: the values
// a key of that enum accepts. Each enum that a key holds specialises it beside its declaration.
template <class E>
struct Choices;

// The name of an enum value, as the manifest spells it.
template <class E>
std::string choice_name(E value) {
  return split(Choices<E>::names, '|').at(static_cast<size_t>(value));
}

// The enum value the manifest spells `name`, one of Choices<E>::names.
template <class E>
E choice_value(const std::string& name) {
  const std::vector<std::string> names = split(Choices<E>::names, '|');
  return static_cast<E>(std::find(names.begin(), names.end(), name) - names.begin());
}

// One key of section struct S.
template <class S>
struct Key {
  dshost_option option;
  std::function<void(const Value&, S&)> fill;
};

// A number (int64_t or double) in [min, max].
template <class S, class Number>
Key<S> key(Number S::*member, const char* name, const char* default_value, double min, double max,
           const char* help) {
  static_assert(std::is_same_v<Number, int64_t> || std::is_same_v<Number, double>);
  constexpr bool integer = std::is_same_v<Number, int64_t>;
  const dshost_option_type type = integer ? DSHOST_OPTION_INT : DSHOST_OPTION_FLOAT;
  return {{sizeof(dshost_option), name, type, default_value, nullptr, 1, min, max, help},
          [member](const Value& v, S& s) {
            if constexpr (integer)
              s.*member = v.i;
            else
              s.*member = v.f;
          }};
}

template <class S>
Key<S> key(bool S::*member, const char* name, const char* default_value, const char* help) {
  return {{sizeof(dshost_option), name, DSHOST_OPTION_BOOL, default_value, nullptr, 0, 0, 0, help},
          [member](const Value& v, S& s) { s.*member = v.b; }};
}

template <class S>
Key<S> key(std::string S::*member, const char* name, const char* default_value, const char* help) {
  return {
      {sizeof(dshost_option), name, DSHOST_OPTION_STRING, default_value, nullptr, 0, 0, 0, help},
      [member](const Value& v, S& s) { s.*member = v.s; }};
}

// A string key whose allowed values are the names of E's values; the member holds the enum.
template <class S, class E, class = std::enable_if_t<std::is_enum_v<E>>>
Key<S> key(E S::*member, const char* name, const char* default_value, const char* help) {
  return {{sizeof(dshost_option), name, DSHOST_OPTION_STRING, default_value, Choices<E>::names, 0,
           0, 0, help},
          [member](const Value& v, S& s) { s.*member = choice_value<E>(v.s); }};
}

// A section's keys: the option table to validate it with, and its values as the struct.
template <class S>
class Keys {
 public:
  Keys(std::initializer_list<Key<S>> keys) : keys_(keys) {
    for (const Key<S>& k : keys_) options_.push_back(k.option);
  }
  OptionTable table() const { return {options_.data(), options_.size()}; }
  // `section` was validated against table().
  S read(const Section& section) const {
    S s{};
    for (const Key<S>& k : keys_) k.fill(section.at(k.option.name), s);
    return s;
  }

 private:
  std::vector<Key<S>> keys_;
  std::vector<dshost_option> options_;
};

}  // namespace dshost
