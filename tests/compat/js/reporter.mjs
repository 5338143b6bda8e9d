// A node:test reporter for the compatibility matrix: one JSON line per finished top-level
// test, {"name", "outcome", "error"}; tests/compat/test_matrix.py reads them.
export default async function* reporter(source) {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue
    if (event.data.nesting !== 0 || event.data.details?.type === 'suite') continue
    const failed = event.type === 'test:fail'
    const skipped = !failed && (event.data.skip !== undefined || event.data.todo !== undefined)
    const line = {
      name: event.data.name,
      outcome: failed ? 'failed' : skipped ? 'skipped' : 'passed',
    }
    if (failed) {
      const err = event.data.details?.error
      line.error = String(err?.cause?.stack ?? err?.cause ?? err?.stack ?? err).slice(0, 4000)
    }
    yield JSON.stringify(line) + '\n'
  }
}
