// Validates KEDA ScaledObjects (a JSON array on stdin) with @kubernetes-models/keda, whose
// validators are generated from KEDA's CRD schemas. Prints one JSON line:
// {"errors": [[name, message], ...]}; exit 0 either way (the test reads the list).
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const errors = [];
for (const manifest of JSON.parse(input)) {
  try {
    new ScaledObject(manifest).validate();
  } catch (error) {
    errors.push([manifest?.metadata?.name ?? "?", String(error.message ?? error)]);
  }
}
console.log(JSON.stringify({ errors }));
