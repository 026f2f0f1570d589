'use strict';
// A local dependency, so `npm ci` has something to install without the registry.
module.exports = function greeting(version) {
  return `hello from example-frontend ${version}`;
};
