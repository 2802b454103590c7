/**
 * What a command line that `node:util`'s parseArgs refused is told: the option it did not know
 * (and the one it probably meant), a value it lacked or should not have had.
 */

/** The option nearest to a mistyped one, if one is near enough to be what was meant. */
function nearest(typed: string, names: string[]): string | undefined {
  const word = typed.replace(/^-+/, "").split("=")[0]!;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const name of names) {
    const d = distance(word, name);
    if (d < bestDistance) [best, bestDistance] = [name, d];
  }
  return bestDistance <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

/** Edit distance (insertions, deletions, substitutions, swaps of two neighbours). */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  let before = row;
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        row[j]! + 1,
        next[j - 1]! + 1,
        row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      // Two letters swapped count as one slip.
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        next[j] = Math.min(next[j]!, before[j - 2]! + 1);
      }
    }
    before = row;
    row = next;
  }
  return row[b.length]!;
}

export function describeArgsError(error: unknown, names: string): string {
  const code = (error as { code?: string }).code;
  const message = (error as Error).message;
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      const meant = nearest(quoted, names.split(", ").map((name) => name.slice(2)));
      const hint = meant ? `did you mean --${meant}? ` : "";
      return `unknown option ${quoted}; ${hint}the options are ${names}`;
    }
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument ${JSON.stringify(quoted)}; the options are ${names}`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const option = /(--[\w-]+)/.exec(message)?.[1] ?? "the option";
      if (message.includes("does not take an argument")) {
        return `${option} takes no value`;
      }
      return message.includes("ambiguous")
        ? `${option} needs a value; to pass one that starts with '-', write ${option}=VALUE`
        : `${option} needs a value`;
    }
    default:
      return message;
  }
}
