'use strict'
// The `e2b` CLI (`@e2b/cli` on npm, a pinned release) against a real `hutch serve`.
// tests/compat/test_matrix.py runs it with `node --test`, NODE_PATH naming that release's
// node_modules (the JS SDK there, the CLI's own dependency, makes the sandboxes), and
// E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY naming the serve, which the CLI reads.
// Each test's name starts with the features it proves, before the colon.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const path = require('node:path')
const { randomUUID } = require('node:crypto')
const { Sandbox } = require('e2b')

const CLI_DIR = path.dirname(require.resolve('@e2b/cli/package.json'))
const CLI = path.join(CLI_DIR, require('@e2b/cli/package.json').bin.e2b)

// Runs `e2b ARGS`: {code, stdout, stderr}. No stdin (`sandbox exec` would forward a pipe
// until it closes) and no TTY (so no update check).
function e2b(...args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    })
    const out = { stdout: '', stderr: '' }
    child.stdout.on('data', (d) => (out.stdout += d))
    child.stderr.on('data', (d) => (out.stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, ...out }))
  })
}

async function withSandbox(opts, body) {
  const sbx = await Sandbox.create('busybox', { timeoutMs: 120_000, ...opts })
  try {
    return await body(sbx)
  } finally {
    await sbx.kill()
  }
}

test('list, info: sandbox list and info show a running sandbox', async () => {
  const tag = randomUUID().slice(0, 8)
  await withSandbox({ metadata: { tag } }, async (sbx) => {
    const listed = await e2b('sandbox', 'list', '--format', 'json', '--metadata', `tag=${tag}`)
    assert.equal(listed.code, 0, listed.stderr)
    const rows = JSON.parse(listed.stdout)
    assert.deepEqual(rows.map((r) => [r.sandboxId, r.templateId, r.state, r.metadata]), [
      [sbx.sandboxId, 'busybox', 'running', { tag }],
    ])
    const pretty = await e2b('sandbox', 'list')
    assert.equal(pretty.code, 0, pretty.stderr)
    assert.ok(pretty.stdout.includes(sbx.sandboxId), pretty.stdout)

    const info = await e2b('sandbox', 'info', sbx.sandboxId, '--format', 'json')
    assert.equal(info.code, 0, info.stderr)
    const got = JSON.parse(info.stdout)
    assert.deepEqual([got.sandboxId, got.state, got.metadata], [sbx.sandboxId, 'running', { tag }])
  })
})

test('logs: sandbox logs prints envd log lines, filtered by level', async () => {
  await withSandbox({}, async (sbx) => {
    const job = await sbx.commands.run('true', { background: true })
    await job.wait()
    const marker = `started pid ${job.pid} `
    let printed
    for (let i = 0; i < 50; i++) {
      // the log is read when asked; a count of tries, not a deadline
      printed = await e2b('sandbox', 'logs', sbx.sandboxId, '--format', 'json')
      assert.equal(printed.code, 0, printed.stderr)
      if (printed.stdout.includes(marker)) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const lines = printed.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))
    const started = lines.find((l) => l.message.startsWith(marker))
    assert.ok(started, printed.stdout)
    assert.equal(started.level, 'info')
    assert.equal(started.logger, 'process')
    assert.ok(!Number.isNaN(Date.parse(started.timestamp)))

    const pretty = await e2b('sandbox', 'logs', sbx.sandboxId)
    assert.equal(pretty.code, 0, pretty.stderr)
    assert.ok(pretty.stdout.includes(`Logs for sandbox ${sbx.sandboxId}`), pretty.stdout)
    assert.ok(pretty.stdout.includes(marker), pretty.stdout)
    const errors = await e2b('sandbox', 'logs', sbx.sandboxId, '--level', 'error')
    assert.equal(errors.code, 0, errors.stderr)
    assert.ok(!errors.stdout.includes(marker), errors.stdout)
  })
})

test('pause, connect: sandbox pause and resume', async () => {
  await withSandbox({}, async (sbx) => {
    await sbx.files.write('/tmp/kept.txt', 'kept')
    const paused = await e2b('sandbox', 'pause', sbx.sandboxId)
    assert.equal(paused.code, 0, paused.stderr)
    assert.ok(paused.stdout.includes('has been paused'), paused.stdout)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
    const resumed = await e2b('sandbox', 'resume', sbx.sandboxId)
    assert.equal(resumed.code, 0, resumed.stderr)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'running')
    assert.equal(await sbx.files.read('/tmp/kept.txt'), 'kept')
  })
})

test('commands: sandbox exec runs a command and returns its exit code', async () => {
  await withSandbox({}, async (sbx) => {
    const ok = await e2b('sandbox', 'exec', sbx.sandboxId, '--', 'sh', '-c', 'echo hi; echo oops >&2')
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal(ok.stdout, 'hi\n')
    assert.ok(ok.stderr.includes('oops'), ok.stderr)
    const bad = await e2b('sandbox', 'exec', sbx.sandboxId, '--', 'sh', '-c', 'exit 7')
    assert.equal(bad.code, 7, bad.stderr)
  })
})

test('kill: sandbox kill ends a sandbox, and says so for one that is gone', async () => {
  const sbx = await Sandbox.create('busybox', { timeoutMs: 120_000 })
  const killed = await e2b('sandbox', 'kill', sbx.sandboxId)
  assert.equal(killed.code, 0, killed.stderr)
  assert.ok(killed.stdout.includes(`Sandbox ${sbx.sandboxId} has been killed`), killed.stdout)
  assert.equal(await sbx.isRunning(), false)
  const again = await e2b('sandbox', 'kill', sbx.sandboxId)
  assert.ok(again.stderr.includes(`Sandbox ${sbx.sandboxId} wasn't found`), again.stderr)
})
