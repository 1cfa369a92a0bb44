// r3map: remote mmap for virtual machines.
// Copyright the r3map authors.  Licensed under the Apache License 2.0.
//
// Runs s3rver's own command line (same arguments) with one fix, so
// that the tests hold the S3 server to what S3 promises:
//
//   node --openssl-legacy-provider s3rver-run.js S3RVER_PACKAGE_DIR ARGS...
//
// s3rver 3.7.1's filesystem store answers a PUT before the object is
// on disk: putObject resolves on the 'finish' event of the hashing
// Transform, not of the file's write stream, and it writes the object
// in place (truncate, then write).  A GET that follows an acknowledged
// PUT can therefore see a short or empty file, which a client reads as
// zeros.  Real S3 acknowledges a PUT only once the object is stored
// and replaces objects atomically.  Here putObject writes a temporary
// file next to the object, waits for it to be closed and renames it
// over the object, and only then answers.
//
// --openssl-legacy-provider: s3rver makes its ListObjectsV2
// continuation tokens with DES, which OpenSSL 3 only has in its legacy
// provider; without it every truncated listing is a 500.

'use strict';

const path = require('path');

const pkgdir = process.argv[2];
if (!pkgdir) {
  console.error('usage: s3rver-run.js S3RVER_PACKAGE_DIR ARGS...');
  process.exit(2);
}
// s3rver's own dependencies, wherever npm placed them.
const fs = require(require.resolve('fs-extra', { paths: [pkgdir] }));
const crypto = require('crypto');
const FilesystemStore = require(path.join(pkgdir, 'lib/stores/filesystem.js'));

let serial = 0;

FilesystemStore.prototype.putObject = async function (object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  // Not ending in "._S3rver_object": listings never show it.
  const tmpPath = `${objectPath}.${process.pid}.${serial++}.tmp`;

  await fs.mkdirp(path.dirname(objectPath));
  const [size, md5] = await new Promise((resolve, reject) => {
    const md5Context = crypto.createHash('md5');
    const out = fs.createWriteStream(tmpPath);
    let total = 0;

    out.on('error', reject);
    out.on('close', () => resolve([total, md5Context.digest('hex')]));
    if (Buffer.isBuffer(object.content)) {
      md5Context.update(object.content);
      total = object.content.length;
      out.end(object.content);
    } else {
      object.content
        .on('error', (err) => {
          out.destroy();
          reject(err);
        })
        .on('data', (chunk) => {
          md5Context.update(chunk);
          total += chunk.length;
        })
        .pipe(out);
    }
  }).catch(async (err) => {
    await fs.remove(tmpPath).catch(() => {});
    throw err;
  });
  await fs.rename(tmpPath, objectPath);
  await this.putMetadata(object.bucket, object.key, object.metadata, md5);
  return { size, md5 };
};

// s3rver's command line parses process.argv with commander, skipping
// the first two entries.
process.argv.splice(2, 1);
require(path.join(pkgdir, 'bin/s3rver.js'));
