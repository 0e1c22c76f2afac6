// A regular-expression matcher in linear time for the keys of PEFT's `rank_pattern` / `alpha_pattern`: keys come
// from files, so they are compiled to a Thompson automaton and run as a Pike VM (Thompson, 1968; Cox, "Regular
// Expression Matching Can Be Simple And Fast", 2007) instead of a backtracking engine such as std::regex, which
// takes exponential time on keys like `(a|aa)+` and overflows its stack on long names.
#pragma once

#include "lorakit/core/error.hpp"

#include <bitset>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace lorakit::io::detail {

/// A key compiled for PEFT's `get_pattern_key` test: key k matches module name m when Python's
/// `re.match(rf"(.*\.)?({k})$", m)` does, i.e. when k matches the whole of m or the whole of a suffix of m that
/// follows a dot.
///
/// Syntax (Python's `re`, a subset): literals; `.`; classes `[...]`, `[^...]` with ranges and the escapes below;
/// `\d \D \w \W \s \S`, escaped punctuation, `\n \t \r \f \v \0 \\`; groups `(...)`, `(?:...)`, `(?P<name>...)`;
/// `|`; `* + ? {m} {m,} {,n} {m,n}`, each optionally lazy (`*?`: laziness does not change whether a whole name
/// matches); `^`, `$`, `\A`, `\Z`. Anything else (back references, look-arounds, inline flags, `\b`) is refused.
/// Names are matched byte by byte, with ASCII classes (`\w` = `[A-Za-z0-9_]`); PEFT's module names are ASCII.
///
/// Cost: compiling is linear in the key (repetition counts multiply, bounded by max_instructions); matching is
/// O(|name| x instructions) time and O(instructions) memory, whatever the key.
class KeyRegex {
 public:
  /// The longest key accepted, and the largest compiled program (after expanding `{m,n}`).
  static constexpr std::size_t max_key_chars = 4096;
  static constexpr std::size_t max_instructions = 8192;
  /// The deepest nesting of groups.
  static constexpr std::size_t max_group_depth = 64;

  /// Compiles `key`. Errors (ValueError, naming the offending position): invalid or unsupported syntax, or a key
  /// beyond the limits above.
  explicit KeyRegex(const std::string& key) {
    if (key.size() > max_key_chars) {
      error(key, 0, "is ", key.size(), " characters long, more than the limit of ", max_key_chars);
    }
    Parser parser{key, 0, {}, 0, {}};
    const int root = parser.alternation();
    if (parser.pos != key.size()) parser.fail("an unbalanced ')'");
    nodes_ = std::move(parser.nodes);
    emit(key, root);
    push({Op::match, 0, 0});
  }

  /// True when `re.match(r"(.*\.)?(key)$", name)` would match.
  bool matches(const std::string& name) const {
    const std::size_t n = name.size();
    // '$' also matches before a final newline, and '.*' does not cross a newline, as in Python.
    const bool final_newline = n > 0 && name[n - 1] == '\n';
    Threads current(program_.size()), next(program_.size());
    bool prefix_open = true;  // no newline so far: '(.*\.)' may still end here
    for (std::size_t i = 0;; ++i) {
      if (i == 0 || (prefix_open && name[i - 1] == '.')) add(current, 0, i, n, final_newline);
      if (i == n) break;
      if (final_newline && i + 1 == n && accepts(current)) return true;
      if (current.list.empty() && !prefix_open) return false;
      const auto c = static_cast<unsigned char>(name[i]);
      for (const int pc : current.list) {
        const Instruction& in = program_[static_cast<std::size_t>(pc)];
        if (in.op == Op::set && sets_[static_cast<std::size_t>(in.a)].test(c)) add(next, pc + 1, i + 1, n, final_newline);
      }
      if (c == '\n') prefix_open = false;
      std::swap(current, next);
      next.clear();
    }
    return accepts(current);
  }

  std::size_t instructions() const { return program_.size(); }

 private:
  using Set = std::bitset<256>;

  enum class Kind { set, concat, alternation, repeat, begin, end };
  struct Node {
    Kind kind;
    std::vector<int> children;
    Set set;
    std::size_t min = 0, max = 0;  // repeat; max == unbounded for no upper limit
  };
  static constexpr std::size_t unbounded = static_cast<std::size_t>(-1);

  enum class Op { set, split, jump, begin, end, match };
  struct Instruction {
    Op op;
    int a;  // set: index into sets_; split, jump: first target
    int b;  // split: second target
  };

  template <class... Parts>
  [[noreturn]] static void error(const std::string& key, std::size_t pos, const Parts&... parts) {
    const std::string shown_key = key.size() <= 120 ? key : key.substr(0, 120) + "...";
    lorakit::detail::fail<ValueError>("PeftPattern", "the key '", shown_key, "' ", parts..., pos > 0 ? " (at offset " : "",
                                      pos > 0 ? std::to_string(pos) : std::string(), pos > 0 ? ")" : "");
  }

  /// Recursive-descent parser of the key into nodes (recursion bounded by max_group_depth).
  struct Parser {
    const std::string& key;
    std::size_t pos;
    std::vector<Node> nodes;
    std::size_t depth;
    std::set<std::string> names;  // of (?P<name>...) groups

    template <class... Parts>
    [[noreturn]] void fail(const Parts&... parts) const {
      error(key, pos, "is not a valid regular expression of the supported syntax: ", parts...);
    }

    bool at_end() const { return pos >= key.size(); }
    char peek() const { return key[pos]; }

    int node(Kind kind) {
      nodes.push_back(Node{kind, {}, {}, 0, 0});
      return static_cast<int>(nodes.size() - 1);
    }

    int set_node(const Set& set) {
      const int id = node(Kind::set);
      nodes[static_cast<std::size_t>(id)].set = set;
      return id;
    }

    int alternation() {
      const int id = node(Kind::alternation);
      for (;;) {
        const int branch = concatenation();  // may grow `nodes`: index it only afterwards
        nodes[static_cast<std::size_t>(id)].children.push_back(branch);
        if (at_end() || peek() != '|') return id;
        ++pos;
      }
    }

    int concatenation() {
      const int id = node(Kind::concat);
      while (!at_end() && peek() != '|' && peek() != ')') {
        const int item = repetition();
        nodes[static_cast<std::size_t>(id)].children.push_back(item);
      }
      return id;
    }

    int repetition() {
      int item = atom();
      bool repeated = false;
      while (!at_end()) {
        std::size_t min = 0, max = 0;
        const std::size_t start = pos;
        if (peek() == '*') {
          min = 0, max = unbounded, ++pos;
        } else if (peek() == '+') {
          min = 1, max = unbounded, ++pos;
        } else if (peek() == '?') {
          min = 0, max = 1, ++pos;
        } else if (peek() == '{' && counted(min, max)) {
        } else {
          break;
        }
        if (repeated) {
          pos = start;
          fail("multiple repeat");
        }
        repeated = true;
        if (!at_end() && peek() == '?') ++pos;  // lazy: the same set of whole matches
        const Kind kind = nodes[static_cast<std::size_t>(item)].kind;
        if (kind == Kind::begin || kind == Kind::end) fail("nothing to repeat");
        const int id = node(Kind::repeat);
        Node& repeat = nodes[static_cast<std::size_t>(id)];
        repeat.children.push_back(item);
        repeat.min = min;
        repeat.max = max;
        item = id;
      }
      return item;
    }

    /// `{m}`, `{m,}`, `{,n}`, `{m,n}` at pos; false (pos unchanged) when '{' starts no count, as Python reads it
    /// as a literal then.
    bool counted(std::size_t& min, std::size_t& max) {
      std::size_t p = pos + 1;
      const auto number = [&](std::size_t& out) {
        const std::size_t begin = p;
        out = 0;
        while (p < key.size() && key[p] >= '0' && key[p] <= '9') {
          out = std::min<std::size_t>(out * 10 + static_cast<std::size_t>(key[p] - '0'), max_instructions + 1);
          ++p;
        }
        return p > begin;
      };
      const bool has_min = number(min);
      if (!has_min) min = 0;
      if (p < key.size() && key[p] == '}') {
        if (!has_min) return false;
        max = min;
      } else if (p < key.size() && key[p] == ',') {
        ++p;
        if (!number(max)) max = unbounded;
        if (p >= key.size() || key[p] != '}') return false;
      } else {
        return false;
      }
      if (max != unbounded && max < min) fail("min repeat greater than max repeat");
      pos = p + 1;
      return true;
    }

    int atom() {
      const char c = peek();
      if (c == '(') return group();
      if (c == '[') return set_node(bracket());
      std::size_t min = 0, max = 0;
      if (c == '*' || c == '+' || c == '?' || (c == '{' && counted(min, max))) fail("nothing to repeat");
      ++pos;
      if (c == '.') {
        Set set;
        set.set();
        set.reset('\n');
        return set_node(set);
      }
      if (c == '^') return node(Kind::begin);
      if (c == '$') return node(Kind::end);
      if (c == '\\') {
        if (at_end()) fail("a trailing backslash");
        const char e = key[pos++];
        if (e == 'A') return node(Kind::begin);
        if (e == 'Z') return node(Kind::end);
        return set_node(escape(e));
      }
      Set set;
      set.set(static_cast<unsigned char>(c));
      return set_node(set);
    }

    int group() {
      ++pos;  // '('
      if (!at_end() && peek() == '?') {
        if (key.compare(pos, 2, "?:") == 0) {
          pos += 2;
        } else if (key.compare(pos, 3, "?P<") == 0) {
          const auto close = key.find('>', pos);
          if (close == std::string::npos || close == pos + 3) fail("a group name without '>'");
          if (!names.insert(key.substr(pos + 3, close - pos - 3)).second) fail("a group name defined twice");
          pos = close + 1;
        } else {
          fail("'(?' other than '(?:' and '(?P<name>' (look-arounds, flags and back references are not supported)");
        }
      }
      if (++depth > max_group_depth) fail("groups nested deeper than ", max_group_depth);
      const int inner = alternation();
      --depth;
      if (at_end() || peek() != ')') fail("a missing ')'");
      ++pos;
      return inner;
    }

    Set escape(char e) {
      Set set;
      const auto range = [&set](int from, int to) {
        for (int c = from; c <= to; ++c) set.set(static_cast<std::size_t>(c));
      };
      switch (e) {
        case 'd': range('0', '9'); return set;
        case 'D': range('0', '9'); return set.flip();
        case 'w': range('0', '9'); range('A', 'Z'); range('a', 'z'); set.set('_'); return set;
        case 'W': range('0', '9'); range('A', 'Z'); range('a', 'z'); set.set('_'); return set.flip();
        case 's': for (const char s : {' ', '\t', '\n', '\r', '\f', '\v'}) set.set(static_cast<unsigned char>(s)); return set;
        case 'S': for (const char s : {' ', '\t', '\n', '\r', '\f', '\v'}) set.set(static_cast<unsigned char>(s)); return set.flip();
        case 'n': set.set('\n'); return set;
        case 't': set.set('\t'); return set;
        case 'r': set.set('\r'); return set;
        case 'f': set.set('\f'); return set;
        case 'v': set.set('\v'); return set;
        case '0': set.set(0); return set;
        default: break;
      }
      const auto u = static_cast<unsigned char>(e);
      if ((u >= '0' && u <= '9') || (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z')) {
        --pos;
        fail("the escape '\\", e, "' (back references, \\b, \\x, \\u and the like are not supported)");
      }
      set.set(u);  // escaped punctuation or a byte of a non-ASCII character
      return set;
    }

    Set bracket() {
      ++pos;  // '['
      bool negate = false;
      if (!at_end() && peek() == '^') negate = true, ++pos;
      Set set;
      bool first = true;
      for (;;) {
        if (at_end()) fail("an unterminated character set");
        if (peek() == ']' && !first) break;
        first = false;
        Set item;
        int low = -1;
        if (peek() == '\\') {
          ++pos;
          if (at_end()) fail("a trailing backslash");
          item = escape(key[pos++]);
          if (item.count() == 1) low = static_cast<int>(index_of(item));
        } else {
          low = static_cast<unsigned char>(key[pos++]);
          item.set(static_cast<std::size_t>(low));
        }
        if (low >= 0 && pos + 1 < key.size() && peek() == '-' && key[pos + 1] != ']') {
          ++pos;
          int high;
          if (peek() == '\\') {
            ++pos;
            if (at_end()) fail("a trailing backslash");
            const Set end = escape(key[pos++]);
            if (end.count() != 1) fail("a range ending in a class escape");
            high = static_cast<int>(index_of(end));
          } else {
            high = static_cast<unsigned char>(key[pos++]);
          }
          if (high < low) fail("a bad character range");
          for (int c = low; c <= high; ++c) item.set(static_cast<std::size_t>(c));
        }
        set |= item;
      }
      ++pos;  // ']'
      return negate ? set.flip() : set;
    }

    static std::size_t index_of(const Set& set) {
      for (std::size_t i = 0; i < set.size(); ++i) {
        if (set.test(i)) return i;
      }
      return 0;
    }
  };

  void push(const Instruction& instruction) { program_.push_back(instruction); }

  int here() const { return static_cast<int>(program_.size()); }

  void check_size(const std::string& key) const {
    if (program_.size() > max_instructions) {
      error(key, 0, "compiles to more than ", max_instructions, " instructions (repetition counts too large)");
    }
  }

  /// Emits node `id` (Thompson's construction; a repeat is its body emitted min times, then the optional rest).
  void emit(const std::string& key, int id) {
    check_size(key);
    const Node& node = nodes_[static_cast<std::size_t>(id)];
    switch (node.kind) {
      case Kind::set:
        sets_.push_back(node.set);
        push({Op::set, static_cast<int>(sets_.size() - 1), 0});
        break;
      case Kind::begin: push({Op::begin, 0, 0}); break;
      case Kind::end: push({Op::end, 0, 0}); break;
      case Kind::concat:
        for (const int child : node.children) emit(key, child);
        break;
      case Kind::alternation: {
        std::vector<int> jumps;
        for (std::size_t k = 0; k < node.children.size(); ++k) {
          const bool last = k + 1 == node.children.size();
          const int split = here();
          if (!last) push({Op::split, split + 1, 0});
          emit(key, node.children[k]);
          if (!last) {
            jumps.push_back(here());
            push({Op::jump, 0, 0});
            program_[static_cast<std::size_t>(split)].b = here();
          }
        }
        for (const int jump : jumps) program_[static_cast<std::size_t>(jump)].a = here();
        break;
      }
      case Kind::repeat: {
        const int child = node.children.front();
        for (std::size_t k = 0; k < node.min; ++k) emit(key, child);
        if (node.max == unbounded) {
          const int loop = here();
          push({Op::split, loop + 1, 0});
          emit(key, child);
          push({Op::jump, loop, 0});
          program_[static_cast<std::size_t>(loop)].b = here();
        } else {
          std::vector<int> splits;
          for (std::size_t k = node.min; k < node.max; ++k) {
            splits.push_back(here());
            push({Op::split, here() + 1, 0});
            emit(key, child);
          }
          for (const int split : splits) program_[static_cast<std::size_t>(split)].b = here();
        }
        break;
      }
    }
    check_size(key);
  }

  /// The threads of one step: a sparse set of program counters, in insertion order.
  struct Threads {
    explicit Threads(std::size_t size) : seen(size, 0) {}
    void clear() {
      for (const int pc : visited) seen[static_cast<std::size_t>(pc)] = 0;
      visited.clear();
      list.clear();
    }
    std::vector<char> seen;    // visited in this step's closure
    std::vector<int> visited;  // the pcs marked in `seen`
    std::vector<int> list;     // the threads waiting for a character (or at the match)
  };

  bool accepts(const Threads& threads) const {
    for (const int pc : threads.list) {
      if (program_[static_cast<std::size_t>(pc)].op == Op::match) return true;
    }
    return false;
  }

  /// Adds pc and everything it reaches without reading a character (iteratively: no recursion on the program).
  void add(Threads& threads, int pc, std::size_t pos, std::size_t n, bool final_newline) const {
    std::vector<int> stack{pc};
    while (!stack.empty()) {
      const int at = stack.back();
      stack.pop_back();
      if (threads.seen[static_cast<std::size_t>(at)]) continue;
      threads.seen[static_cast<std::size_t>(at)] = 1;
      threads.visited.push_back(at);
      const Instruction& in = program_[static_cast<std::size_t>(at)];
      switch (in.op) {
        case Op::jump: stack.push_back(in.a); break;
        case Op::split:
          stack.push_back(in.b);
          stack.push_back(in.a);
          break;
        case Op::begin:
          if (pos == 0) stack.push_back(at + 1);
          break;
        case Op::end:
          if (pos == n || (final_newline && pos + 1 == n)) stack.push_back(at + 1);
          break;
        case Op::set:
        case Op::match: threads.list.push_back(at); break;
      }
    }
  }

  std::vector<Node> nodes_;
  std::vector<Set> sets_;
  std::vector<Instruction> program_;
};

}  // namespace lorakit::io::detail
