'use strict'
// The code interpreter through a real `hutch serve` with the official JS SDK
// (`@e2b/code-interpreter`, pinned in code-interpreter/package.json), unchanged.
// The compatibility matrix's JS code-interpreter column (tests/compat/test_matrix.py,
// test_js_code_interpreter) runs it with `node --test`, NODE_PATH naming the installed
// node_modules, and E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY naming the matrix's serve;
// a failed test fails that column (it ran twice per suite when tests/e2e ran it as well).

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { Sandbox } = require('@e2b/code-interpreter')
const { TimeoutError, NotFoundError } = require('e2b')

async function withSandbox(body) {
  const sbx = await Sandbox.create({ timeoutMs: 300_000 }) // code-interpreter-v1
  try {
    return await body(sbx)
  } finally {
    await sbx.kill()
  }
}

test('run_code, charts: runCode with callbacks, results, a DataFrame, a chart, files and commands', async () => {
  await withSandbox(async (sbx) => {
    assert.equal((await sbx.getInfo()).templateId, 'code-interpreter-v1')
    const out = []
    const err = []
    const results = []
    const errors = []
    const ex = await sbx.runCode("import sys\nprint('hi')\nprint('oops', file=sys.stderr)\n1 + 1", {
      onStdout: (m) => out.push(m.line),
      onStderr: (m) => err.push(m.line),
      onResult: (r) => results.push(r),
      onError: (e) => errors.push(e),
    })
    assert.equal(ex.text, '2')
    assert.deepEqual(ex.logs.stdout, ['hi\n'])
    assert.deepEqual(out, ['hi\n'])
    assert.deepEqual(err, ['oops\n'])
    assert.equal(results.length, 1)
    assert.equal(results[0].isMainResult, true)
    assert.deepEqual(errors, [])

    await sbx.files.write('/home/user/data.csv', 'a,b\n1,2\n3,4\n')
    const frame = await sbx.runCode("import pandas as pd\npd.read_csv('/home/user/data.csv')")
    assert.ok(frame.results[0].html.includes('<table'))
    assert.deepEqual(frame.results[0].data, { a: [1, 3], b: [2, 4] })
    const chart = await sbx.runCode(
      "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('Squares')\nplt.show()",
    )
    assert.ok(Buffer.from(chart.results[0].png, 'base64').subarray(0, 4).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47])))
    assert.equal(chart.results[0].chart.type, 'line')
    assert.equal(chart.results[0].chart.title, 'Squares')
    await sbx.runCode("open('/home/user/k.txt', 'w').write('from the kernel')")
    assert.equal(await sbx.files.read('/home/user/k.txt'), 'from the kernel')
    assert.equal((await sbx.commands.run('whoami')).stdout, 'user\n')

    const failed = await sbx.runCode('1 / 0', { onError: (e) => errors.push(e) })
    assert.equal(failed.error.name, 'ZeroDivisionError')
    assert.equal(failed.error.value, 'division by zero')
    assert.equal(errors.length, 1)
  })
})

test('code contexts, run_code errors: contexts, bash, env vars, timeouts, a dying kernel, unknown language and context', async () => {
  await withSandbox(async (sbx) => {
    const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
    await sbx.runCode('x = 41', { context: ctx })
    assert.equal((await sbx.runCode('x + 1', { context: ctx })).text, '42')
    assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, '/tmp')
    assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
    await sbx.restartCodeContext(ctx)
    assert.equal((await sbx.runCode('x', { context: ctx })).error.name, 'NameError')
    await sbx.removeCodeContext(ctx)
    await assert.rejects(sbx.runCode('1', { context: ctx }), NotFoundError)

    const bash = await sbx.runCode('echo $((6 * 7))', { language: 'bash' })
    assert.deepEqual(bash.logs.stdout, ['42\n'])
    // The SDK's error carries the status only (the server's text names the installed ones).
    await assert.rejects(sbx.runCode('1', { language: 'cobol' }), /400/)
    const env = await sbx.runCode("import os; os.environ['GREETING']", { envs: { GREETING: 'hi' } })
    assert.equal(env.text, 'hi')

    assert.equal((await sbx.runCode('def (:')).error.name, 'SyntaxError')
    await assert.rejects(sbx.runCode('while True:\n    pass', { timeoutMs: 3000 }), TimeoutError)
    assert.equal((await sbx.runCode('1 + 1')).text, '2')
    const died = await sbx.runCode('import os; os._exit(1)')
    assert.equal(died.error.name, 'KernelDied')
    assert.equal((await sbx.runCode('2 + 2')).text, '4')
  })
})
