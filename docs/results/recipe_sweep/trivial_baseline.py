# Commonest-gold score of the seen/unseen evaluation splits of docs/results/recipe_sweep/sweep.py (gsm_split: eval
# seed 1001, 200 questions each, templates with id % 5 == 0 unseen).
import re
from collections import Counter

import reasoning_gym


def key(e):
    return " ".join(re.findall(r"\d+", e["question"]))


ev = reasoning_gym.create_dataset("gsm_symbolic", seed=1001, size=20000)
seen, unseen, keys = [], [], set()
for i in range(len(ev)):
    e = ev[i]
    k = key(e)
    if k in keys:
        continue
    keys.add(k)
    (unseen if ev.task_indices[i] % 5 == 0 else seen).append(e)
    if len(seen) >= 200 and len(unseen) >= 200:
        break
for name, items in (("seen", seen[:200]), ("unseen", unseen[:200])):
    gold, count = Counter(str(e["answer"]) for e in items).most_common(1)[0]
    print(name, len(items[:200]), gold, count, f"{count / 200:.1%}")
