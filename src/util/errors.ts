/**
 * A failure with a stable machine-readable `code`. Host failures (a syscall, KVM, the file
 * system) and operator mistakes (a bad flag, a bad API value) are both reported this way; guest
 * mistakes are answered by the device protocol instead and never thrown.
 */
export class MemvisorError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MemvisorError';
    this.code = code;
  }
}

/** An operator mistake: bad input on the command line or the API. Changes nothing. */
export class InvalidInputError extends MemvisorError {
  constructor(message: string) {
    super('invalid_input', message);
    this.name = 'InvalidInputError';
  }
}
