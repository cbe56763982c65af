// The clamp range of math::exp_approx, in a translation unit of its own so that the kernels
// that inline exp_approx see two constants of unknown value (see recurrent_math.h).
#include "recurrent_math.h"

namespace seqkern::math {

extern const float kExpLowest = -87.3f;
extern const float kExpHighest = 88.3f;

}  // namespace seqkern::math
